//! Node ports on 127.0.0.1. Every node gets a block of [`PORTS_PER_NODE`] consecutive
//! ports: gossip (UDP) at the first, JSON-RPC (TCP) at offset [`RPC_PORT_OFFSET`]; the
//! ports between are left for the node's other sockets. Automatic blocks come from
//! [`AUTO_RANGE`], below Linux's ephemeral range, so outgoing connections do not land in
//! them. Single ports (an etcd member's, a test node's, a watchtower's metrics) come from
//! [`free_port`], in [`SINGLE_RANGE`], between the two.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::ops::Range;
use std::sync::Mutex;

/// Ports per node.
pub const PORTS_PER_NODE: u16 = 10;
/// Offset of the RPC port in a node's block.
pub const RPC_PORT_OFFSET: u16 = 9;
/// Where automatic blocks are looked for.
pub const AUTO_RANGE: Range<u16> = 20_000..30_000;

/// Where [`free_port`] hands out single ports: above the automatic node blocks and below
/// Linux's default ephemeral range (32768-60999, `net.ipv4.ip_local_port_range`). A port
/// picked by binding port 0 is an ephemeral one: between the check and the listener's bind,
/// any outgoing connection on the machine could take it ("Address already in use"); one
/// from here only another listener can.
pub const SINGLE_RANGE: Range<u16> = 30_000..32_768;

/// The next port [`free_port`] looks at in this process (None: not chosen yet).
static NEXT_SINGLE: Mutex<Option<u16>> = Mutex::new(None);

/// A 127.0.0.1 port in [`SINGLE_RANGE`], free for both TCP and UDP a moment ago, that this
/// process has not handed out before (until it has gone round the whole range). Each
/// process scans from its own place (from its pid), so parallel launchers start apart.
/// Another process may still bind it first; callers that can, retry on "address already
/// in use".
pub fn free_port() -> u16 {
    let mut next = NEXT_SINGLE.lock().unwrap_or_else(|e| e.into_inner());
    let len = SINGLE_RANGE.end - SINGLE_RANGE.start;
    let mut at = next.unwrap_or_else(|| {
        (std::process::id().wrapping_mul(2_654_435_761) % u32::from(len)) as u16
    });
    for _ in 0..len {
        let port = SINGLE_RANGE.start + at;
        at = (at + 1) % len;
        if port_is_free(port) {
            *next = Some(at);
            return port;
        }
    }
    panic!("no free port in {SINGLE_RANGE:?} on 127.0.0.1");
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// One node's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePorts {
    pub gossip: u16,
    pub rpc: u16,
}

impl NodePorts {
    /// The ports of the block starting at `first`.
    pub fn from_block(first: u16) -> Self {
        NodePorts {
            gossip: first,
            rpc: first + RPC_PORT_OFFSET,
        }
    }
}

/// A port that is in use.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error(
        "port {port} (for {node}) is in use on 127.0.0.1; pick another --base-port, or leave \
         it out to use free ports"
    )]
    InUse { port: u16, node: String },
    #[error("no {needed} free blocks of {PORTS_PER_NODE} ports found in {AUTO_RANGE:?}; pass --base-port")]
    Exhausted { needed: usize },
}

/// True when every port of the block starting at `first` can be bound on 127.0.0.1, over
/// TCP and UDP. The check releases the ports at once: another process may still take one
/// before the node binds it (the node then fails to start, and says so in its log).
pub fn block_is_free(first: u16) -> bool {
    first_busy_port(first).is_none()
}

fn first_busy_port(first: u16) -> Option<u16> {
    (first..first.saturating_add(PORTS_PER_NODE)).find(|&p| !port_is_free(p))
}

/// The blocks `base, base+10, …` for `names`, each checked free.
pub fn fixed_blocks(base: u16, names: &[String]) -> Result<Vec<u16>, PortError> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let first = base + (i as u16) * PORTS_PER_NODE;
            match first_busy_port(first) {
                None => Ok(first),
                Some(port) => Err(PortError::InUse {
                    port,
                    node: name.clone(),
                }),
            }
        })
        .collect()
}

/// `count` free blocks in [`AUTO_RANGE`], scanning from a block chosen by `seed` (the
/// process id, so that parallel launchers start their scans apart).
pub fn auto_blocks(count: usize, seed: u32) -> Result<Vec<u16>, PortError> {
    let blocks = (AUTO_RANGE.end - AUTO_RANGE.start) / PORTS_PER_NODE;
    let start = (seed.wrapping_mul(2_654_435_761) % u32::from(blocks)) as u16;
    let mut found = Vec::with_capacity(count);
    for i in 0..blocks {
        let first = AUTO_RANGE.start + ((start + i) % blocks) * PORTS_PER_NODE;
        if block_is_free(first) {
            found.push(first);
            if found.len() == count {
                return Ok(found);
            }
        }
    }
    Err(PortError::Exhausted { needed: count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_blocks_are_distinct_free_and_in_range() {
        let blocks = auto_blocks(4, std::process::id()).unwrap();
        let mut sorted = blocks.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        for b in blocks {
            assert!(
                AUTO_RANGE.contains(&b) && (b - AUTO_RANGE.start).is_multiple_of(PORTS_PER_NODE)
            );
            let p = NodePorts::from_block(b);
            assert_eq!((p.gossip, p.rpc), (b, b + 9));
        }
    }

    #[test]
    fn single_ports_are_distinct_free_and_outside_the_blocks_and_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 50);
        for p in ports {
            assert!(SINGLE_RANGE.contains(&p) && !AUTO_RANGE.contains(&p), "{p}");
        }
        // A port someone holds (here over UDP only) is skipped.
        let next = free_port();
        let _hold = UdpSocket::bind((Ipv4Addr::LOCALHOST, next + 1)).ok();
        let after = free_port();
        assert_ne!(after, next + 1, "a port bound over UDP was handed out");
    }

    #[test]
    fn a_busy_fixed_port_is_named() {
        let first = auto_blocks(1, std::process::id() ^ 0x5555).unwrap()[0];
        let _hold = TcpListener::bind((Ipv4Addr::LOCALHOST, first + 3)).unwrap();
        let names = vec!["validator-0".to_string()];
        assert_eq!(
            fixed_blocks(first, &names),
            Err(PortError::InUse {
                port: first + 3,
                node: "validator-0".into()
            })
        );
        assert!(!block_is_free(first));
    }
}
