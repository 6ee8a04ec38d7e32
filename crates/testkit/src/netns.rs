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
//!
//! [`Subnet`] is the other shape: several "machines" on one private subnet and nothing
//! else (no link to the host at all), for tests that run a whole multi-machine set-up.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
        huione_cluster::etcd::command_in_netns(Some(&self.name), program)
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

    /// Forwards TCP connections made to a new listener on 127.0.0.1 (on the host) to
    /// `target` inside the namespace, without using the veth: the forwarding thread joins
    /// the namespace (`setns`) after opening the listener, so its outgoing sockets live in
    /// the namespace. A path that [`NetnsLink::cut`] does not cut, like a management
    /// network. Stops when the returned value is dropped.
    pub fn forward_from_host(&self, target: SocketAddr) -> anyhow::Result<HostForward> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("bind 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let ns_path = format!("/var/run/netns/{}", self.name);
        let ns_file =
            std::fs::File::open(&ns_path).with_context(|| format!("cannot open {ns_path}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // Network namespaces are per thread; threads spawned from here inherit it.
            let rc = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
            let joined = if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            };
            let ok = joined.is_ok();
            let _ = ready_tx.send(joined);
            if !ok {
                return;
            }
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        std::thread::spawn(move || pipe(client, target));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ready_rx
            .recv()
            .context("the forwarding thread died")?
            .with_context(|| format!("cannot join the namespace {ns_path} (setns)"))?;
        Ok(HostForward {
            addr,
            stop,
            thread: Some(thread),
        })
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

/// Machines on one private subnet: a hub namespace holding a bridge, and one namespace per
/// machine joined to the bridge by a veth pair, each machine with its own address in a /24
/// of 10.232.0.0/16. Nothing is joined to the host (no interface of it appears on the host,
/// and no namespace has a default route), so the machines reach each other and nothing
/// else, and each has its own loopback and its own ports (every machine can use the
/// default ports). Names carry the test process's pid and a counter, so parallel tests do
/// not collide. Dropping it deletes every namespace, also while unwinding from a failed
/// assertion (stop the processes you started in them first).
///
/// ```text
///   ns "huione-<pid>-s<k>-<i>": eth0 10.232.<x>.<i+1>/24 <-- veth --> m<i> in ns "huione-<pid>-s<k>-hub" (bridge br0)
/// ```
#[derive(Debug)]
pub struct Subnet {
    hub: String,
    /// Whether the hub namespace exists (for Drop after a partial set-up).
    created_hub: bool,
    machines: Vec<(String, Ipv4Addr)>,
}

impl Subnet {
    /// Creates the hub and `n` machines (1 to 200), every link up. Needs root, like
    /// [`NetnsLink::create`]; the error says so.
    pub fn create(n: usize) -> anyhow::Result<Subnet> {
        anyhow::ensure!(
            (1..=200).contains(&n),
            "a subnet has 1 to 200 machines, not {n}"
        );
        let pid = std::process::id();
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut subnet = Subnet {
            hub: format!("huione-{pid}-s{k}-hub"),
            created_hub: false,
            machines: Vec::new(),
        };
        ip(&["netns", "add", &subnet.hub]).with_context(|| {
            format!(
                "cannot create a network namespace with `ip netns add {}`: this test must run \
                 as root (CAP_SYS_ADMIN and CAP_NET_ADMIN) with iproute2 installed \
                 (scripts/deps.sh installs it)",
                subnet.hub
            )
        })?;
        subnet.created_hub = true;
        let hub = subnet.hub.clone();
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        // The subnets of different tests never meet (separate namespaces); spreading the
        // third byte only keeps logs of parallel tests apart for a reader.
        let third = ((pid as usize).wrapping_mul(7).wrapping_add(k) % 250) as u8 + 1;
        for i in 0..n {
            let name = format!("huione-{pid}-s{k}-{i}");
            ip(&["netns", "add", &name])?;
            let addr = Ipv4Addr::new(10, 232, third, i as u8 + 1);
            subnet.machines.push((name.clone(), addr));
            // Made inside the namespaces: no interface name on the host to collide with.
            let port = format!("m{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &name,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }
        Ok(subnet)
    }

    /// How many machines.
    pub fn len(&self) -> usize {
        self.machines.len()
    }

    /// Never: a subnet has at least one machine.
    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    /// Machine `i`'s address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.machines[i].1
    }

    /// Machine `i`'s namespace name.
    pub fn name(&self, i: usize) -> &str {
        &self.machines[i].0
    }

    /// `ip netns exec NAME program` on machine `i`: `ip` execs the program without
    /// forking, so the child's pid is the program's.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        huione_cluster::etcd::command_in_netns(Some(self.name(i)), program)
    }

    /// A TCP connection to `addr` made from inside machine `i` (a short-lived thread joins
    /// the namespace to open it; the socket stays in that namespace), so a test on the host
    /// can talk to services on the subnet, which has no link to the host.
    pub fn connect(
        &self,
        i: usize,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<TcpStream> {
        let ns_path = format!("/var/run/netns/{}", self.name(i));
        let ns_file = std::fs::File::open(&ns_path)?;
        std::thread::spawn(move || {
            // Network namespaces are per thread: this one's only.
            if unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            TcpStream::connect_timeout(&addr, timeout)
        })
        .join()
        .map_err(|_| std::io::Error::other("the connecting thread panicked"))?
    }

    /// Cuts machine `i` off the subnet: every packet on its link dropped silently, both
    /// ways (a zero-length `pfifo` on the egress of each end, as [`NetnsLink::cut`]).
    pub fn cut(&self, i: usize) -> anyhow::Result<()> {
        let drop_all = ["root", "pfifo", "limit", "0"];
        let port = format!("m{i}");
        let mut hub_side = vec!["qdisc", "replace", "dev", port.as_str()];
        hub_side.extend(drop_all);
        tc(Some(&self.hub), &hub_side)?;
        let mut machine_side = vec!["qdisc", "replace", "dev", "eth0"];
        machine_side.extend(drop_all);
        tc(Some(self.name(i)), &machine_side)?;
        Ok(())
    }

    /// Drops every UDP packet on machine `i`'s link, both ways, while TCP still passes:
    /// the node there loses gossip, blocks, votes and repair (all UDP) but still reaches
    /// etcd and serves RPC, like a machine whose cluster traffic is firewalled. An `htb`
    /// root with a `u32` filter sending UDP to a class whose queue holds nothing, on each
    /// end's egress. [`Subnet::heal`] removes it.
    pub fn drop_udp(&self, i: usize) -> anyhow::Result<()> {
        let port = format!("m{i}");
        for (ns, dev) in [(self.name(i), "eth0"), (self.hub.as_str(), port.as_str())] {
            let ns = Some(ns);
            htb_with_dropping_class(ns, dev, "1")?;
            tc(
                ns,
                &[
                    "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
                    "u32", "match", "ip", "protocol", "17", "0xff", "flowid", "1:2",
                ],
            )?;
        }
        Ok(())
    }

    /// Cuts machine `i` off the subnet like [`Subnet::cut`], except for TCP between
    /// machine `j` and port `port` on machine `i` (both directions) and ARP: a watchtower
    /// on `j` still reaches the RPC of the node on `i` over a path that survives the cut.
    /// An `htb` root whose default class drops everything (a zero-length `pfifo`) and `u32`
    /// filters sending the spared packets to a class that passes them, on the egress of
    /// each end of `i`'s link. [`Subnet::heal`] removes it.
    pub fn cut_sparing_tcp(&self, i: usize, j: usize, port: u16) -> anyhow::Result<()> {
        anyhow::ensure!(
            i != j,
            "cut_sparing_tcp({i}, {j}): a machine cannot spare itself"
        );
        let (ip_i, ip_j) = (format!("{}/32", self.ip(i)), format!("{}/32", self.ip(j)));
        let port = port.to_string();
        let hub_port = format!("m{i}");
        // Leaving machine i: from its port to j. Entering it (the hub's egress): from j to
        // its port.
        let sides = [
            (self.name(i), "eth0", [&ip_i, &ip_j], "sport"),
            (
                self.hub.as_str(),
                hub_port.as_str(),
                [&ip_j, &ip_i],
                "dport",
            ),
        ];
        for (ns, dev, [src, dst], port_field) in sides {
            let ns = Some(ns);
            htb_with_dropping_class(ns, dev, "2")?;
            tc(
                ns,
                &[
                    "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
                    "u32", "match", "ip", "src", src, "match", "ip", "dst", dst, "match", "ip",
                    "protocol", "6", "0xff", "match", "ip", port_field, &port, "0xffff", "flowid",
                    "1:1",
                ],
            )?;
            // Neighbour resolution, or the spared path dies once the ARP entries expire.
            tc(
                ns,
                &[
                    "filter", "add", "dev", dev, "parent", "1:", "protocol", "arp", "prio", "2",
                    "u32", "match", "u32", "0", "0", "flowid", "1:1",
                ],
            )?;
        }
        Ok(())
    }

    /// Restores machine `i`'s link after [`Subnet::cut`], [`Subnet::cut_sparing_tcp`] or
    /// [`Subnet::drop_udp`].
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        tc(Some(self.name(i)), &["qdisc", "del", "dev", "eth0", "root"])?;
        let port = format!("m{i}");
        tc(Some(&self.hub), &["qdisc", "del", "dev", &port, "root"])?;
        Ok(())
    }
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) over `stream`, a
/// connection opened with [`Subnet::connect`] (or on the host), and returns the whole
/// response (3 s to read it). For tests that reach services inside namespaces, which the
/// shared client (`huione_rpc::client`) cannot connect to.
pub fn http_exchange(mut stream: TcpStream, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The HTTP/1.1 request of one JSON-RPC call to a node at `host`, for [`http_exchange`].
#[cfg(feature = "nodes")]
pub fn json_rpc_request(host: std::net::IpAddr, method: &str, params: serde_json::Value) -> String {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        .to_string();
    format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// On `dev`'s egress in `ns`: an `htb` root with class 1:1 (passes) and class 1:2 (a
/// zero-length `pfifo`: drops), `default` being where unfiltered packets go. The caller adds
/// the `u32` filters that pick the other class.
fn htb_with_dropping_class(ns: Option<&str>, dev: &str, default: &str) -> anyhow::Result<()> {
    tc(
        ns,
        &[
            "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", default,
        ],
    )?;
    for class in ["1:1", "1:2"] {
        tc(
            ns,
            &[
                "class", "add", "dev", dev, "parent", "1:", "classid", class, "htb", "rate",
                "10gbit",
            ],
        )?;
    }
    tc(
        ns,
        &[
            "qdisc", "add", "dev", dev, "parent", "1:2", "handle", "2:", "pfifo", "limit", "0",
        ],
    )?;
    Ok(())
}

impl Drop for Subnet {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it (and so the pairs).
        let hub = self.created_hub.then(|| self.hub.clone());
        for name in self.machines.iter().map(|(n, _)| n.clone()).chain(hub) {
            if let Err(e) = ip(&["netns", "del", &name]) {
                eprintln!("huione-testkit: {e:#}");
            }
        }
    }
}

/// A TCP forwarder from the host into a namespace ([`NetnsLink::forward_from_host`]).
#[derive(Debug)]
pub struct HostForward {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostForward {
    /// Where to connect on the host: 127.0.0.1 and the listener's port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HostForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies both ways between `client` and a new connection to `target`, until both close.
fn pipe(client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    let (mut client, mut server) = (client, server);
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = up.join();
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
        // The forwarder reaches a listener in the namespace from the host while cut.
        let ns_file = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
        let ns_ip = link.ns_ip();
        let (tx, rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            assert_eq!(
                unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let l = TcpListener::bind((ns_ip, 0)).unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let (mut c, _) = l.accept().unwrap();
            std::io::Write::write_all(&mut c, b"hello").unwrap();
        });
        let target = rx.recv().unwrap();
        let fwd = link.forward_from_host(target).unwrap();
        let mut c = TcpStream::connect(fwd.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut c, &mut got).unwrap();
        assert_eq!(got, "hello");
        server.join().unwrap();
        drop(fwd);
        link.heal().unwrap();
        assert!(probe(&link), "the healed link passes no traffic");
        drop(link);
        assert!(!ip(&["netns", "list"]).unwrap().contains(&name));
        assert!(ip(&["link", "show", &host_if]).is_err());
    }

    /// Needs root (CI runs as root); fails otherwise.
    #[test]
    fn subnet_machines_reach_each_other_and_clean_up() {
        let net = Subnet::create(3).unwrap_or_else(|e| panic!("{e:#}"));
        let names: Vec<String> = (0..3).map(|i| net.name(i).to_string()).collect();
        // Machine 0 listens on its own address; 1 and 2 connect with bash's /dev/tcp.
        let probe = |from: usize, to: Ipv4Addr, port: u16| {
            net.command(from, "timeout")
                .args(["2", "bash", "-c"])
                .arg(format!("echo > /dev/tcp/{to}/{port}"))
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        // `ip netns exec` execs python3: the child is the server, killed below.
        let mut server = net
            .command(0, "python3")
            .arg("-c")
            .arg(format!(
                "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('{}', 7000))\ns.listen(8)\nwhile True: s.accept()[0].close()",
                net.ip(0)
            ))
            .spawn()
            .unwrap();
        let up = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            probe(1, net.ip(0), 7000)
        });
        assert!(up, "machine 1 cannot reach machine 0 at {}", net.ip(0));
        assert!(
            probe(2, net.ip(0), 7000),
            "machine 2 cannot reach machine 0"
        );
        net.cut(2).unwrap();
        assert!(
            !probe(2, net.ip(0), 7000),
            "the cut machine still reaches the subnet"
        );
        assert!(
            probe(1, net.ip(0), 7000),
            "cutting machine 2 cut machine 1 too"
        );
        net.heal(2).unwrap();
        assert!(
            probe(2, net.ip(0), 7000),
            "the healed machine cannot reach the subnet"
        );
        let _ = server.kill();
        let _ = server.wait();
        drop(net);
        let list = ip(&["netns", "list"]).unwrap();
        for n in names {
            assert!(!list.contains(&n), "{n} left behind");
        }
    }

    /// Needs root (CI runs as root); fails otherwise.
    #[test]
    fn a_cut_sparing_one_tcp_path_passes_only_that_path() {
        let net = Subnet::create(3).unwrap_or_else(|e| panic!("{e:#}"));
        let probe = |from: usize, port: u16| {
            net.command(from, "timeout")
                .args(["2", "bash", "-c"])
                .arg(format!("echo > /dev/tcp/{}/{port}", net.ip(0)))
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        // Machine 0 serves two ports; `ip netns exec` execs python3, killed below.
        let mut server = net
            .command(0, "python3")
            .arg("-c")
            .arg(format!(
                "import socket, threading\n\
                 def serve(p):\n    s=socket.socket()\n    \
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    \
                 s.bind(('{ip}', p))\n    s.listen(8)\n    \
                 while True: s.accept()[0].close()\n\
                 threading.Thread(target=serve, args=(7001,), daemon=True).start()\n\
                 serve(7000)",
                ip = net.ip(0)
            ))
            .spawn()
            .unwrap();
        let up = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            probe(1, 7000) && probe(1, 7001)
        });
        assert!(up, "machine 1 cannot reach machine 0's two ports");
        net.cut_sparing_tcp(0, 1, 7000).unwrap();
        assert!(probe(1, 7000), "the spared path does not pass");
        assert!(
            !probe(1, 7001),
            "another port of the cut machine is reachable"
        );
        assert!(!probe(2, 7000), "another machine reaches the spared port");
        net.heal(0).unwrap();
        assert!(probe(2, 7001), "the healed machine cannot be reached");
        let _ = server.kill();
        let _ = server.wait();
    }
}
