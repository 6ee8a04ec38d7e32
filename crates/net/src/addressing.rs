//! Which addresses a node binds and which it advertises in gossip (pure, no I/O).
//!
//! A validator binds sockets to local addresses (`--bind-address` for gossip/blocks/votes,
//! `--rpc-bind-address` for JSON-RPC and `/metrics`) and tells its peers, in its signed
//! contact info, where to reach it. These are different things: a node bound to
//! `0.0.0.0` must not advertise `0.0.0.0` (peers would send to themselves), and a node
//! bound to `127.0.0.1` is unreachable from other machines. The advertised gossip host is,
//! in order of preference:
//!
//! 1. `--gossip-host`, when given;
//! 2. the bind address, when it is a concrete address (not `0.0.0.0`/`::`);
//! 3. otherwise, with entrypoints, the source address an entrypoint observed for our
//!    datagram (an *address echo*, like Solana's ip-echo);
//! 4. otherwise (no entrypoints: the first node of a cluster) the loopback address, with
//!    a warning that nodes on other machines cannot reach it.
//!
//! A loopback or unspecified advertised address together with an entrypoint that is not
//! on loopback is refused ([`AddressError`]): the node would gossip an address that no
//! peer can use and vote alone on its own chain.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How the advertised gossip host is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPlan {
    /// Known from the flags.
    Fixed(IpAddr),
    /// Ask the entrypoints which source address they see (an address echo).
    FromEntrypoints,
    /// No entrypoint and no concrete address: loopback, reachable from this machine only.
    LoopbackOnly(IpAddr),
}

/// A configuration that would advertise an address peers cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "--gossip-host {0} is an unspecified address; give the address other nodes reach \
         this one at (for example this machine's own IP)"
    )]
    UnspecifiedGossipHost(IpAddr),
    #[error(
        "{flag} {addr} is a loopback address, but the entrypoint {entrypoint} is not on \
         loopback: peers there could not reach this node. Set {fix}"
    )]
    LoopbackToRemote {
        flag: &'static str,
        addr: IpAddr,
        entrypoint: SocketAddr,
        fix: &'static str,
    },
    #[error(
        "the entrypoint {entrypoint} reported this node's address as {addr}, which peers \
         cannot use; set --gossip-host to this machine's address"
    )]
    UnusableEcho {
        entrypoint: SocketAddr,
        addr: IpAddr,
    },
}

/// Decides how to find the advertised gossip host (see the module docs).
pub fn plan_gossip_host(
    bind: IpAddr,
    gossip_host: Option<IpAddr>,
    entrypoints: &[SocketAddr],
) -> Result<HostPlan, AddressError> {
    let remote_entrypoint = entrypoints.iter().find(|e| !e.ip().is_loopback()).copied();
    if let Some(host) = gossip_host {
        if host.is_unspecified() {
            return Err(AddressError::UnspecifiedGossipHost(host));
        }
        if let (true, Some(entrypoint)) = (host.is_loopback(), remote_entrypoint) {
            return Err(AddressError::LoopbackToRemote {
                flag: "--gossip-host",
                addr: host,
                entrypoint,
                fix: "--gossip-host to this machine's address as the entrypoint sees it",
            });
        }
        return Ok(HostPlan::Fixed(host));
    }
    if !bind.is_unspecified() {
        if let (true, Some(entrypoint)) = (bind.is_loopback(), remote_entrypoint) {
            return Err(AddressError::LoopbackToRemote {
                flag: "--bind-address",
                addr: bind,
                entrypoint,
                fix: "--bind-address to this machine's address (or 0.0.0.0, learning the \
                      address from the entrypoint), or --gossip-host",
            });
        }
        return Ok(HostPlan::Fixed(bind));
    }
    if entrypoints.is_empty() {
        return Ok(HostPlan::LoopbackOnly(loopback_like(bind)));
    }
    Ok(HostPlan::FromEntrypoints)
}

/// Checks an address an entrypoint echoed back: usable unless unspecified, or loopback
/// while the entrypoint is not.
pub fn check_echo(entrypoint: SocketAddr, addr: IpAddr) -> Result<IpAddr, AddressError> {
    if addr.is_unspecified() || (addr.is_loopback() && !entrypoint.ip().is_loopback()) {
        return Err(AddressError::UnusableEcho { entrypoint, addr });
    }
    Ok(addr)
}

/// The RPC address to advertise, given where RPC is bound and the advertised gossip host:
/// a concrete non-loopback bind address as is; an unspecified one at the gossip host; a
/// loopback one (private RPC) only when the node itself advertises loopback.
pub fn advertised_rpc(rpc_bind: SocketAddr, gossip_host: IpAddr) -> Option<SocketAddr> {
    let ip = rpc_bind.ip();
    if ip.is_unspecified() {
        Some(SocketAddr::new(gossip_host, rpc_bind.port()))
    } else if ip.is_loopback() && !gossip_host.is_loopback() {
        None
    } else {
        Some(rpc_bind)
    }
}

/// Where a process on this machine reaches a socket bound to `bind`.
pub fn local_reach(bind: SocketAddr) -> SocketAddr {
    if bind.ip().is_unspecified() {
        SocketAddr::new(loopback_like(bind.ip()), bind.port())
    } else {
        bind
    }
}

/// True when a peer that advertises `addr` can be reached by a node advertising `ours`:
/// never at an unspecified address, and at a loopback address only from loopback.
pub fn reachable_from(ours: IpAddr, addr: IpAddr) -> bool {
    !addr.is_unspecified() && (!addr.is_loopback() || ours.is_loopback())
}

fn loopback_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn gossip_host_wins_and_is_checked() {
        let remote = [sa("10.0.0.1:8001")];
        assert_eq!(
            plan_gossip_host(ip("0.0.0.0"), Some(ip("10.0.0.2")), &remote),
            Ok(HostPlan::Fixed(ip("10.0.0.2")))
        );
        assert_eq!(
            plan_gossip_host(ip("10.0.0.3"), Some(ip("10.0.0.2")), &remote),
            Ok(HostPlan::Fixed(ip("10.0.0.2")))
        );
        let e = plan_gossip_host(ip("0.0.0.0"), Some(ip("0.0.0.0")), &remote).unwrap_err();
        assert!(e.to_string().contains("--gossip-host 0.0.0.0"), "{e}");
        let e = plan_gossip_host(ip("0.0.0.0"), Some(ip("127.0.0.1")), &remote).unwrap_err();
        assert!(e.to_string().contains("--gossip-host 127.0.0.1"), "{e}");
        assert!(e.to_string().contains("10.0.0.1:8001"), "{e}");
        // Loopback to a loopback entrypoint is a one-machine cluster: fine.
        assert_eq!(
            plan_gossip_host(
                ip("0.0.0.0"),
                Some(ip("127.0.0.1")),
                &[sa("127.0.0.1:8001")]
            ),
            Ok(HostPlan::Fixed(ip("127.0.0.1")))
        );
    }

    #[test]
    fn bind_address_then_echo_then_loopback() {
        let remote = [sa("127.0.0.1:8001"), sa("10.0.0.1:8001")];
        assert_eq!(
            plan_gossip_host(ip("10.0.0.2"), None, &remote),
            Ok(HostPlan::Fixed(ip("10.0.0.2")))
        );
        let e = plan_gossip_host(ip("127.0.0.1"), None, &remote).unwrap_err();
        assert!(e.to_string().contains("--bind-address 127.0.0.1"), "{e}");
        assert!(e.to_string().contains("10.0.0.1:8001"), "{e}");
        assert_eq!(
            plan_gossip_host(ip("127.0.0.1"), None, &[sa("127.0.0.1:8001")]),
            Ok(HostPlan::Fixed(ip("127.0.0.1")))
        );
        assert_eq!(
            plan_gossip_host(ip("0.0.0.0"), None, &remote),
            Ok(HostPlan::FromEntrypoints)
        );
        assert_eq!(
            plan_gossip_host(ip("0.0.0.0"), None, &[]),
            Ok(HostPlan::LoopbackOnly(ip("127.0.0.1")))
        );
        assert_eq!(
            plan_gossip_host(ip("::"), None, &[]),
            Ok(HostPlan::LoopbackOnly(ip("::1")))
        );
    }

    #[test]
    fn echoes_and_rpc() {
        let remote = sa("10.0.0.1:8001");
        assert_eq!(check_echo(remote, ip("10.0.0.2")), Ok(ip("10.0.0.2")));
        assert!(check_echo(remote, ip("127.0.0.1")).is_err());
        assert!(check_echo(remote, ip("0.0.0.0")).is_err());
        assert_eq!(
            check_echo(sa("127.0.0.1:8001"), ip("127.0.0.1")),
            Ok(ip("127.0.0.1"))
        );
        let host = ip("10.0.0.2");
        assert_eq!(
            advertised_rpc(sa("0.0.0.0:8899"), host),
            Some(sa("10.0.0.2:8899"))
        );
        assert_eq!(
            advertised_rpc(sa("10.0.0.9:8899"), host),
            Some(sa("10.0.0.9:8899"))
        );
        assert_eq!(advertised_rpc(sa("127.0.0.1:8899"), host), None);
        assert_eq!(
            advertised_rpc(sa("127.0.0.1:8899"), ip("127.0.0.1")),
            Some(sa("127.0.0.1:8899"))
        );
        assert_eq!(local_reach(sa("0.0.0.0:8899")), sa("127.0.0.1:8899"));
        assert_eq!(local_reach(sa("10.0.0.2:8899")), sa("10.0.0.2:8899"));
        assert!(reachable_from(ip("10.0.0.2"), ip("10.0.0.3")));
        assert!(!reachable_from(ip("10.0.0.2"), ip("127.0.0.1")));
        assert!(!reachable_from(ip("10.0.0.2"), ip("0.0.0.0")));
        assert!(reachable_from(ip("127.0.0.1"), ip("127.0.0.1")));
    }
}
