//! A network namespace joined to the host by a veth pair, for tests that cut a process off
//! the network. Needs root (`ip netns add`) and iproute2 (`ip`, `tc`).
//!
//! ```text
//!   host (everything else)                 namespace "huione-<pid>-<n>"
//!   <host_if> 10.231.a.b+1/30  <-- veth -->  <ns_if> 10.231.a.b+2/30   (+ lo)
//! ```
//!
//! The namespace has no other interface and no default route, so a process in it reaches
//! only the host-side address. Each end is named after the test process's pid and a
//! counter, and the /30 is one that no host interface carries yet, so parallel tests do
//! not collide. Traffic stays on this machine: the addresses exist only on the two ends.
//!
//! [`NetnsLink::cut`] makes the link drop every packet, both ways, silently: a `pfifo`
//! queue of length 0 on each end's egress (`tc qdisc replace dev X root pfifo limit 0`).
//! Both ends stay up and keep their routes, so open TCP connections stall and UDP vanishes,
//! as in a real partition. Not `ip link set down`: on the host side that removes the
//! connected route, and the host would then send traffic for the namespace's address to
//! its default gateway, off this machine. Not `netem loss 100%`: `sch_netem` is often not
//! in the kernel. [`NetnsLink::heal`] removes the queues.
//!
//! Dropping the value deletes the veth pair and the namespace (even while unwinding from a
//! failed assertion). Stop the processes you started in it first.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context as _};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Number of /30 subnets in 10.231.0.0/16.
const SUBNETS: u32 = 1 << 14;

/// A namespace and the veth pair that joins it to the host. See the module docs.
#[derive(Debug)]
pub struct NetnsLink {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    /// What has been created so far (for Drop after a partial set-up).
    created_ns: bool,
    created_link: bool,
    cut: bool,
}

impl NetnsLink {
    /// Creates the namespace (with `lo` up) and the veth pair with a free 10.231.x.y/30,
    /// both ends up. Errors name the command that failed; without root, `ip netns add`
    /// is the one, and the message says so.
    pub fn create() -> anyhow::Result<NetnsLink> {
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut link = NetnsLink {
            name: format!("huione-{pid}-{n}"),
            host_if: format!("hu{pid}h{n}"),
            ns_if: format!("hu{pid}n{n}"),
            host_ip: Ipv4Addr::UNSPECIFIED,
            ns_ip: Ipv4Addr::UNSPECIFIED,
            created_ns: false,
            created_link: false,
            cut: false,
        };
        if link.host_if.len() > 15 {
            bail!("interface name {} is longer than 15 bytes", link.host_if);
        }
        ip(&["netns", "add", &link.name]).with_context(|| {
            format!(
                "cannot create a network namespace with `ip netns add {}`: this test must run \
                 as root (CAP_SYS_ADMIN and CAP_NET_ADMIN) with iproute2 installed \
                 (scripts/deps.sh installs it)",
                link.name
            )
        })?;
        link.created_ns = true;
        ip(&[
            "link",
            "add",
            &link.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &link.ns_if,
        ])?;
        link.created_link = true;
        ip(&["link", "set", &link.ns_if, "netns", &link.name])?;
        link.assign_addresses(pid, n)?;
        ip(&["link", "set", &link.host_if, "up"])?;
        link.ip_in_ns(&["link", "set", "lo", "up"])?;
        link.ip_in_ns(&["link", "set", &link.ns_if, "up"])?;
        Ok(link)
    }

    /// Picks a /30 in 10.231.0.0/16 that no host interface carries, starting from one
    /// derived from the pid, and puts its two addresses on the two ends.
    fn assign_addresses(&mut self, pid: u32, n: usize) -> anyhow::Result<()> {
        let start = (pid.wrapping_mul(4).wrapping_add(n as u32)) % SUBNETS;
        for step in 0..SUBNETS {
            let k = (start + step) % SUBNETS;
            let base = u32::from(Ipv4Addr::new(10, 231, 0, 0)) + k * 4;
            let (host_ip, ns_ip) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
            let net = format!("{}/30", Ipv4Addr::from(base));
            if !host_addresses_in(&net)?.is_empty() {
                continue;
            }
            ip(&[
                "addr",
                "add",
                &format!("{host_ip}/30"),
                "dev",
                &self.host_if,
            ])?;
            // Another test may have taken the same /30 between the check and the add.
            if host_addresses_in(&net)?.len() > 1 {
                ip(&[
                    "addr",
                    "del",
                    &format!("{host_ip}/30"),
                    "dev",
                    &self.host_if,
                ])?;
                continue;
            }
            self.ip_in_ns(&["addr", "add", &format!("{ns_ip}/30"), "dev", &self.ns_if])?;
            self.host_ip = host_ip;
            self.ns_ip = ns_ip;
            return Ok(());
        }
        bail!("no free /30 left in 10.231.0.0/16 on this host")
    }

    /// The namespace's name (`ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host end's address: bind what the namespace must reach here.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace end's address: bind the process in the namespace here.
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// The host-side interface name.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// The namespace-side interface name.
    pub fn ns_if(&self) -> &str {
        &self.ns_if
    }

    /// `ip netns exec NAME program`: a command that runs `program` in the namespace. `ip`
    /// execs the program without forking, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Whether the link is cut now.
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// Cuts the link: every packet either way is dropped silently from now on.
    pub fn cut(&mut self) -> anyhow::Result<()> {
        let drop_all = ["root", "pfifo", "limit", "0"];
        let mut host = vec!["qdisc", "replace", "dev", &self.host_if];
        host.extend(drop_all);
        tc(None, &host)?;
        self.cut = true;
        let mut ns = vec!["qdisc", "replace", "dev", &self.ns_if];
        ns.extend(drop_all);
        tc(Some(&self.name), &ns)?;
        Ok(())
    }

    /// Restores the link after [`NetnsLink::cut`].
    pub fn heal(&mut self) -> anyhow::Result<()> {
        tc(
            Some(&self.name),
            &["qdisc", "del", "dev", &self.ns_if, "root"],
        )?;
        tc(None, &["qdisc", "del", "dev", &self.host_if, "root"])?;
        self.cut = false;
        Ok(())
    }

    fn ip_in_ns(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for NetnsLink {
    fn drop(&mut self) {
        if self.created_link {
            // Deleting one end deletes both; the namespace end may already be gone.
            let _ = ip(&["link", "del", &self.host_if]);
        }
        if self.created_ns {
            if let Err(e) = ip(&["netns", "del", &self.name]) {
                eprintln!("huione-testkit: {e:#}");
            }
        }
    }
}

/// Host addresses (`ip -o -4 addr show to NET`) inside `net`, one line per address.
fn host_addresses_in(net: &str) -> anyhow::Result<Vec<String>> {
    Ok(ip(&["-o", "-4", "addr", "show", "to", net])?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    )
}

fn tc(netns: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
    let shown = format!("tc {}", args.join(" "));
    match netns {
        None => run(Command::new("tc").args(args), &shown),
        Some(ns) => run(
            Command::new("ip")
                .args(["netns", "exec", ns, "tc"])
                .args(args),
            &format!("ip netns exec {ns} {shown}"),
        ),
    }
}

fn run(cmd: &mut Command, shown: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{shown}` (is iproute2 installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root, like the tests that use it (CI runs as root); fails otherwise.
    #[test]
    fn create_cut_heal_and_clean_up() {
        let mut link = NetnsLink::create().unwrap_or_else(|e| panic!("{e:#}"));
        let (name, host_if) = (link.name.clone(), link.host_if.clone());
        assert!(ip(&["netns", "list"]).unwrap().contains(&name));
        let listener = std::net::TcpListener::bind((link.host_ip(), 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = |link: &NetnsLink| {
            // bash's /dev/tcp from inside the namespace, bounded by `timeout`.
            link.command("timeout")
                .args(["1", "bash", "-c"])
                .arg(format!("echo > /dev/tcp/{}/{port}", link.host_ip()))
                .status()
                .unwrap()
                .success()
        };
        assert!(probe(&link), "the namespace cannot reach the host end");
        link.cut().unwrap();
        assert!(!probe(&link), "the cut link still passes traffic");
        link.heal().unwrap();
        assert!(probe(&link), "the healed link passes no traffic");
        drop(link);
        assert!(!ip(&["netns", "list"]).unwrap().contains(&name));
        assert!(ip(&["link", "show", &host_if]).is_err());
    }
}
