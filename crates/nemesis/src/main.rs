//! `huione-nemesis`: a seeded, randomized fault campaign against real processes.
//!
//! It starts etcd over mutual TLS (1 or 3 members), three staked validators whose third
//! vote account is run by a *primary* (tower in etcd) with a hot *secondary* and a second
//! *standby* (own identities, `--authorized-voter` = the primary's key), and
//! `huione-watchtower` next to the secondary with short cooldowns. Then, for `--minutes`,
//! it waits until the pair is settled (the primary runs the identity and its votes land,
//! both standbys run their own identities, the watchtower is armed) and injects one fault
//! drawn from the seed: SIGKILL or SIGSTOP/SIGCONT of the primary or the secondary, a
//! planned `set-identity` on the secondary, both standbys calling `set-identity` at once,
//! an etcd member killed or frozen (3 members) or the whole etcd frozen (1 member), a
//! wall-clock step of 0.3-3 s either way on the primary's or the secondary's machine
//! (both run under libfaketime reading their offset from a file, so the running process's
//! clock steps; the monotonic clock does not), with `--full-disk` a full disk under the
//! primary's or the secondary's ledger, and with `--netns` the primary cut off the network
//! with or without the watchtower's path to its RPC (and with 3 etcd members, one
//! member's machine cut off).
//!
//! With `--netns` (as root) every machine is its own network namespace on one private
//! subnet (`huione_testkit::netns::Subnet`, as in the failover guide's cross-machine
//! test): the two other validators, the primary, the secondary (with the watchtower next
//! to it) and the second standby, and each etcd member, each binding its machine's address
//! (the entrypoint: v0's). The harness stays on the host: it reaches every RPC from inside
//! the node's machine (`Subnet::connect`) and runs the operator commands (`set-identity`,
//! `huione-tower history`) on their machine (`Subnet::command`); `huione-audit` reads the
//! ledgers from the shared filesystem. Without `--netns` everything runs on this host's
//! loopback. It plays systemd: a validator that exits or was killed is started again with its own
//! command line, so every failover ends with the restart cycle (the primary comes back,
//! catches up and reclaims; the standby that held the identity exits and restarts as
//! itself).
//!
//! `huione-audit` runs over every ledger every `--audit-every-secs` and at the end. The
//! report: failovers by kind (tower-lock acquires of the identity by reason, watchtower
//! decisions), faults by kind, violations (must be 0), fault -> first vote sent and
//! landed (p50/p99/max), vote slots missed, leader slots skipped, the longest time the
//! vote account went without a landed vote. Exit code 0 only if the audit is clean and the
//! pair always settled again. A failing run keeps its directory (every log, the seed).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use huione_core::audit::AuditRecord;
use huione_core::ScheduleCache;
use huione_testkit::netns::{http_exchange, json_rpc_request, Subnet};
use huione_testkit::nodes::{free_port, now_ms, Cluster, Node};
use huione_testkit::{EtcdCluster, MemberHost};
use huione_validator::ledger::blockstore::BlockStore;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(
    name = "huione-nemesis",
    version,
    about = "Randomized fault campaign on a real local cluster"
)]
struct Args {
    /// How long to inject faults (fractions allowed).
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// Seed of the fault schedule (default: from the clock; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// etcd members: 1 or 3.
    #[arg(long, default_value_t = 1)]
    etcd_members: usize,
    /// Slot length of the cluster.
    #[arg(long, default_value_t = 200)]
    slot_ms: u64,
    /// Run directory (default: a new directory under the system temp dir). Kept when
    /// the run fails or with --keep.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the run directory even when the run passes.
    #[arg(long)]
    keep: bool,
    /// Run huione-audit over every ledger this often.
    #[arg(long, default_value_t = 60)]
    audit_every_secs: u64,
    /// Run every machine (each etcd member, v0, v1, the primary, the secondary with the
    /// watchtower, the second standby) in its own network namespace on one private subnet
    /// (needs root) and add the faults "cut the primary off the network" (with and without
    /// the watchtower's TCP path to its RPC) and, with 3 etcd members, "cut an etcd
    /// member's machine off the network".
    #[arg(long)]
    netns: bool,
    /// Put the pair's primary's and secondary's ledgers (block store, snapshots, audit
    /// log) each on its own small tmpfs the campaign mounts (needs root) and add the faults
    /// "full disk under the primary's / the secondary's ledger" (a filler file takes every
    /// free byte for a while, then is deleted). Unmounted at the end.
    #[arg(long)]
    full_disk: bool,
    /// Size of each ledger's tmpfs with --full-disk, in MiB.
    #[arg(long, default_value_t = 128)]
    disk_mb: u64,
    /// Directory of huione-validator, huione-watchtower and huione-audit (default: next
    /// to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Only these faults (comma-separated names as the report prints them; default:
    /// every fault the set-up can take).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
}

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillPrimary,
    StopPrimary,
    KillSecondary,
    StopSecondary,
    Planned,
    PlannedRace,
    EtcdMemberKill,
    EtcdMemberFreeze,
    EtcdFreeze,
    CutPrimary,
    CutPrimarySparingWatchtower,
    EtcdMemberCut,
    ClockStep,
    FullDiskPrimary,
    FullDiskSecondary,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillPrimary => "sigkill-primary",
            Fault::StopPrimary => "sigstop-primary",
            Fault::KillSecondary => "sigkill-secondary",
            Fault::StopSecondary => "sigstop-secondary",
            Fault::Planned => "planned-set-identity",
            Fault::PlannedRace => "two-standbys-set-identity",
            Fault::EtcdMemberKill => "etcd-member-kill",
            Fault::EtcdMemberFreeze => "etcd-member-freeze",
            Fault::EtcdFreeze => "etcd-freeze",
            Fault::CutPrimary => "cut-primary-off-network",
            Fault::CutPrimarySparingWatchtower => "cut-primary-sparing-watchtower",
            Fault::EtcdMemberCut => "etcd-member-cut-off-network",
            Fault::ClockStep => "clock-step",
            Fault::FullDiskPrimary => "full-disk-primary",
            Fault::FullDiskSecondary => "full-disk-secondary",
        }
    }

    /// The faults a cluster with `members` etcd members can take.
    fn menu(members: usize, netns: bool, full_disk: bool) -> Vec<Fault> {
        let mut m = vec![
            Fault::KillPrimary,
            Fault::StopPrimary,
            Fault::KillSecondary,
            Fault::StopSecondary,
            Fault::Planned,
            Fault::PlannedRace,
            Fault::ClockStep,
        ];
        if members >= 3 {
            m.extend([Fault::EtcdMemberKill, Fault::EtcdMemberFreeze]);
        } else {
            m.push(Fault::EtcdFreeze);
        }
        if netns {
            m.extend([Fault::CutPrimary, Fault::CutPrimarySparingWatchtower]);
        }
        if netns && members >= 3 {
            m.push(Fault::EtcdMemberCut);
        }
        if full_disk {
            m.extend([Fault::FullDiskPrimary, Fault::FullDiskSecondary]);
        }
        m
    }
}

/// splitmix64: the whole schedule follows from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// The pair's processes, by role. Index into [`Campaign::pair`].
const PRIMARY: usize = 0;
const SECONDARY: usize = 1;
const STANDBY2: usize = 2;
/// The validator whose vote account the pair runs.
const PAIR: usize = 2;

/// The machines, by index in [`Machines`]: the cluster's validators v0 (the entrypoint and
/// the witness) and v1, the pair's three nodes (the watchtower runs on the secondary's),
/// then one per etcd member.
const M_V0: usize = 0;
const M_PRIMARY: usize = 2;
const M_SECONDARY: usize = 3;
const M_ETCD: usize = 5;
const MACHINE_NAMES: [&str; M_ETCD] = ["v0", "v1", "primary", "secondary", "standby2"];

/// Where the processes run and how the harness, on the host, reaches them: with
/// `--netns` every machine is its own network namespace on one private subnet with no
/// link to the host, so the harness opens its connections from inside a machine
/// ([`Subnet::connect`]) and runs commands there ([`Subnet::command`]); without it,
/// every machine is this host's loopback.
struct Machines {
    net: Option<Subnet>,
    names: Vec<String>,
}

impl Machines {
    fn new(netns: bool, etcd_members: usize) -> anyhow::Result<Machines> {
        let mut names: Vec<String> = MACHINE_NAMES.iter().map(|n| n.to_string()).collect();
        names.extend((0..etcd_members).map(|i| format!("etcd-{i}")));
        let net = if netns {
            Some(Subnet::create(names.len()).context(
                "--netns puts every machine in its own network namespace and could not \
                 (run as root: `ip netns add` needs CAP_SYS_ADMIN and CAP_NET_ADMIN)",
            )?)
        } else {
            None
        };
        Ok(Machines { net, names })
    }

    fn ip(&self, m: usize) -> IpAddr {
        self.net
            .as_ref()
            .map_or(IpAddr::from([127, 0, 0, 1]), |n| IpAddr::V4(n.ip(m)))
    }

    fn netns(&self, m: usize) -> Option<&str> {
        self.net.as_ref().map(|n| n.name(m))
    }

    /// `program` to run on machine `m` (`ip netns exec`, which execs it: the child's pid
    /// is the program's).
    fn command(&self, m: usize, program: impl AsRef<OsStr>) -> Command {
        match &self.net {
            Some(n) => n.command(m, program),
            None => Command::new(program),
        }
    }

    /// A TCP connection to `addr` opened on machine `m`.
    fn connect(&self, m: usize, addr: SocketAddr) -> Option<TcpStream> {
        let timeout = Duration::from_secs(1);
        match &self.net {
            Some(n) => n.connect(m, addr, timeout),
            None => TcpStream::connect_timeout(&addr, timeout),
        }
        .ok()
    }

    /// One JSON-RPC call to the node on machine `m` (its address, `port`), made there.
    fn rpc(&self, m: usize, port: u16, method: &str, params: Value) -> Option<Value> {
        let addr = SocketAddr::new(self.ip(m), port);
        let req = json_rpc_request(addr.ip(), method, params);
        serde_json::from_str(&self.http(m, addr, &req)?).ok()
    }

    /// `GET path` on 127.0.0.1:`port` of machine `m`; the body.
    fn http_get_local(&self, m: usize, port: u16, path: &str) -> Option<String> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        self.http(m, SocketAddr::from(([127, 0, 0, 1], port)), &req)
    }

    /// Sends `req` from machine `m` to `addr` (3 s to read); the answer's body.
    fn http(&self, m: usize, addr: SocketAddr, req: &str) -> Option<String> {
        let resp = http_exchange(self.connect(m, addr)?, req)?;
        Some(resp.split_once("\r\n\r\n")?.1.to_string())
    }

    fn subnet(&self) -> &Subnet {
        self.net.as_ref().expect("only with --netns")
    }

    /// One line per machine: `machine NAME IP NAMESPACE` ("-": this host's network).
    fn listing(&self) -> Vec<String> {
        (0..self.names.len())
            .map(|m| {
                format!(
                    "machine {} {} {}",
                    self.names[m],
                    self.ip(m),
                    self.netns(m).unwrap_or("-")
                )
            })
            .collect()
    }
}

/// A child killed (and reaped) when dropped: no exit path leaves it running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Set by SIGINT or SIGTERM: the campaign stops injecting and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// A validator process the campaign supervises: restarted after it exits or is killed.
struct Supervised {
    node: Node,
    /// When to start it again (None: running, or paused on purpose).
    restart_at: Option<Instant>,
    /// SIGSTOPped until then (then SIGCONT).
    frozen_until: Option<Instant>,
    restarts: u64,
    /// The machine it runs on.
    machine: usize,
    /// The tmpfs its ledger is on (`--full-disk`; the pair's primary and secondary only).
    disk: Option<Disk>,
    /// Its wall clock's offset, read by libfaketime (`FAKETIME_TIMESTAMP_FILE`, re-read
    /// every second): writing it steps the running process's clock. The pair's primary
    /// and secondary only.
    clock_file: Option<PathBuf>,
}

struct FaultRecord {
    kind: Fault,
    at_ms: u64,
    /// First vote for the identity sent at or after the fault (ms after it).
    first_sent_ms: Option<u64>,
    /// First landed vote (as the witness sees it) at least as new as that vote.
    first_landed_ms: Option<u64>,
}

struct Campaign {
    args: Args,
    seed: u64,
    rng: Rng,
    run_dir: PathBuf,
    bin_dir: PathBuf,
    etcd: EtcdCluster,
    c: Cluster,
    pair: Vec<Supervised>,
    watchtower: Option<KillOnDrop>,
    /// libfaketime, preloaded into the pair's primary and secondary.
    faketime_lib: PathBuf,
    /// The watchtower's metrics port, on 127.0.0.1 of the secondary's machine.
    wt_metrics_port: u16,
    wt_audit: PathBuf,
    identity: String,
    vote_account: String,
    /// (time, lastVote) each time the witness saw the vote account's last vote move.
    landed: Vec<(u64, u64)>,
    faults: Vec<FaultRecord>,
    audits: u64,
    problems: Vec<String>,
    started_ms: u64,
    /// "No space left on device" lines the full-disk faults drew from the nodes.
    disk_errors: u64,
    /// Votes of the vote account found in stored blocks, and those with no audit record
    /// (after the processes are stopped).
    landed_votes_checked: Option<(usize, usize)>,
    /// `gossip NAME IDENTITY ADDRESS` per validator, from getClusterNodes of v0.
    gossip: Vec<String>,
    /// Declared last: dropped after every process (fields drop in order), so no
    /// namespace goes while something still runs in it.
    machines: Machines,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    // Ctrl-C or a kill: stop injecting, then clean up (processes, mounts, namespaces) and
    // keep the run directory, instead of dying with them in place.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    if args.etcd_members != 1 && args.etcd_members != 3 {
        bail!("--etcd-members {}: use 1 or 3", args.etcd_members);
    }
    if args.minutes.is_nan() || args.minutes <= 0.0 {
        bail!("--minutes {}: must be more than 0", args.minutes);
    }
    let seed = args
        .seed
        .unwrap_or_else(|| now_ms() ^ u64::from(std::process::id()));
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .to_path_buf(),
    };
    for tool in [
        "huione-validator",
        "huione-watchtower",
        "huione-audit",
        "huione-tower",
    ] {
        if !bin_dir.join(tool).is_file() {
            bail!(
                "{} not found: build it with `cargo build -p huione-validator -p huione-watchtower -p huione-cli` \
                 (or point --bin-dir at the directory holding it)",
                bin_dir.join(tool).display()
            );
        }
    }
    let run_dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("huione-nemesis-{seed}-{}", now_ms())),
    };
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create the run directory {}", run_dir.display()))?;
    std::fs::write(run_dir.join("seed"), format!("{seed}\n"))?;
    println!(
        "huione-nemesis: seed {seed} ({} min, {} etcd member(s), {} ms slots), run directory {}",
        args.minutes,
        args.etcd_members,
        args.slot_ms,
        run_dir.display()
    );
    println!(
        "repeat with: huione-nemesis --seed {seed} --minutes {} --etcd-members {} --slot-ms {}{}",
        args.minutes,
        args.etcd_members,
        args.slot_ms,
        match (args.netns, args.full_disk) {
            (false, false) => String::new(),
            (true, false) => " --netns".into(),
            (false, true) => format!(" --full-disk --disk-mb {}", args.disk_mb),
            (true, true) => format!(" --netns --full-disk --disk-mb {}", args.disk_mb),
        }
    );
    if !args.faults.is_empty() {
        println!("  (with --faults {})", args.faults.join(","));
    }
    // Validators' temp dirs (keys, genesis, ledgers, logs) go under the run directory, so
    // a failing run keeps them. Set before any thread exists.
    std::env::set_var("TMPDIR", &run_dir);

    let mut campaign = Campaign::start(args, seed, run_dir.clone(), bin_dir)?;
    let outcome = campaign.run_faults();
    let audit = campaign.audit("final");
    campaign.stop_validators();
    campaign.check_landed_votes_recorded();
    let report = campaign.report();
    println!("{report}");
    std::fs::write(run_dir.join("report.txt"), &report)?;
    let ok = outcome.is_ok() && audit.is_ok() && campaign.problems.is_empty();
    if let Err(e) = &outcome {
        println!("FAILED: {e:#}");
    }
    if let Err(e) = &audit {
        println!("FAILED: {e:#}");
    }
    for p in &campaign.problems {
        println!("PROBLEM: {p}");
    }
    let keep = !ok || campaign.args.keep;
    campaign.shutdown(keep);
    if keep {
        println!(
            "{}: every log and the seed are in {}",
            if ok { "kept" } else { "FAILED run" },
            run_dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(ok)
}

impl Campaign {
    fn start(args: Args, seed: u64, run_dir: PathBuf, bin_dir: PathBuf) -> anyhow::Result<Self> {
        let faketime_lib = find_libfaketime()?;
        // Created first, so dropped last on an early error (after the processes in it).
        let machines = Machines::new(args.netns, args.etcd_members)?;
        for line in machines.listing() {
            println!("{line}");
        }
        let etcd_dir = run_dir.join("etcd-cluster");
        let etcd = match &machines.net {
            Some(_) => {
                let hosts: Vec<MemberHost> = (0..args.etcd_members)
                    .map(|i| MemberHost {
                        ip: machines.ip(M_ETCD + i),
                        netns: machines.netns(M_ETCD + i).map(str::to_string),
                    })
                    .collect();
                // etcdctl (health checks) runs on v0's machine, never cut off.
                EtcdCluster::start_in_on_hosts(&etcd_dir, &hosts, machines.netns(M_V0))
            }
            None => EtcdCluster::start_in(&etcd_dir, args.etcd_members),
        }
        .context("start etcd")?;
        let mut c = Cluster::new(bin_dir.join("huione-validator"), 3, args.slot_ms);
        let flags = etcd.validator_flags();
        let entry = c.nodes[0].gossip_port;
        c.nodes[PAIR] = c.node_spec("primary", PAIR, Some(entry), &flags);
        let secondary = c.standby_spec("secondary", PAIR, &flags, true);
        let standby2 = c.standby_spec("standby2", PAIR, &flags, true);
        // Every node binds (and so advertises) its machine's address; the entrypoint is
        // v0's.
        let entry_ip = machines.ip(M_V0);
        for (m, node) in c.nodes[..PAIR].iter_mut().enumerate() {
            rebind(node, machines.ip(m), entry_ip);
        }
        let identity = c.keys[PAIR].0.pubkey().to_string();
        let vote_account = c.keys[PAIR].1.pubkey().to_string();
        println!("cluster in {}", c.path().display());
        for (m, n) in c.nodes[..PAIR].iter_mut().enumerate() {
            start_node(&machines, m, n, None)?;
        }
        let primary = Node {
            name: c.nodes[PAIR].name.clone(),
            identity_file: c.nodes[PAIR].identity_file.clone(),
            ledger: c.nodes[PAIR].ledger.clone(),
            gossip_port: c.nodes[PAIR].gossip_port,
            rpc_port: c.nodes[PAIR].rpc_port,
            args: c.nodes[PAIR].args.clone(),
            child: c.nodes[PAIR].child.take(),
            bin: c.nodes[PAIR].bin.clone(),
        };
        let mut pair: Vec<Supervised> = Vec::new();
        for (i, mut node) in [primary, secondary, standby2].into_iter().enumerate() {
            let machine = M_PRIMARY + i;
            rebind(&mut node, machines.ip(machine), entry_ip);
            let clock_file = if i == STANDBY2 {
                None
            } else {
                let f = run_dir.join(format!("clock-{}", node.name));
                std::fs::write(&f, "+0s\n")
                    .with_context(|| format!("cannot write {}", f.display()))?;
                Some(f)
            };
            let disk = if args.full_disk && i != STANDBY2 {
                Some(Disk::mount(&node.ledger, args.disk_mb)?)
            } else {
                None
            };
            pair.push(Supervised {
                node,
                restart_at: None,
                frozen_until: None,
                restarts: 0,
                machine,
                disk,
                clock_file,
            });
        }
        for p in &mut pair {
            p.start(&machines, &faketime_lib)?;
        }
        // Its metrics port, on 127.0.0.1 of the secondary's machine: not one of the
        // secondary's own ports (picked on the host, which does not see that machine's).
        let s = &pair[SECONDARY].node;
        let wt_metrics_port = std::iter::repeat_with(free_port)
            .find(|p| ![s.gossip_port, s.rpc_port].contains(p))
            .expect("an endless iterator");
        let wt_audit = run_dir.join("watchtower-audit.jsonl");
        let mut campaign = Campaign {
            rng: Rng(seed),
            seed,
            run_dir,
            bin_dir,
            etcd,
            c,
            pair,
            watchtower: None,
            faketime_lib,
            wt_metrics_port,
            wt_audit,
            identity,
            vote_account,
            landed: Vec::new(),
            faults: Vec::new(),
            audits: 0,
            problems: Vec::new(),
            started_ms: now_ms(),
            disk_errors: 0,
            landed_votes_checked: None,
            gossip: Vec::new(),
            machines,
            args,
        };
        // The watchtower starts once the primary votes and the secondary is caught up.
        campaign
            .wait_until(Duration::from_secs(120), "the primary votes", |c| {
                c.primary_runs_identity() && c.landed_recently(3_000)
            })
            .context("the cluster did not start")?;
        campaign.start_watchtower()?;
        campaign.check_gossip_addresses()?;
        Ok(campaign)
    }

    /// Every validator's gossip address as the cluster sees it (getClusterNodes of v0;
    /// of v1 for v0 itself if v0 leaves itself out) must be its own machine's address:
    /// waits until v0 lists all five, records them for the report, and counts a mismatch
    /// as a problem.
    fn check_gossip_addresses(&mut self) -> anyhow::Result<()> {
        let mut who: Vec<(String, usize, String)> = Vec::new();
        for (m, n) in self.c.nodes[..PAIR].iter().enumerate() {
            let id = self.c.keys[m].0.pubkey().to_string();
            who.push((n.name.clone(), m, id));
        }
        for p in &self.pair {
            let id = Self::identity_on(&self.machines, p)
                .with_context(|| format!("{} does not answer getIdentity", p.node.name))?;
            who.push((p.node.name.clone(), p.machine, id));
        }
        let nodes_of = |c: &Self, m: usize| -> Vec<(String, String)> {
            let port = c.c.nodes[m].rpc_port;
            let r = c.machines.rpc(m, port, "getClusterNodes", json!([]));
            r.and_then(|r| r["result"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|n| Some((n["pubkey"].as_str()?.into(), n["gossip"].as_str()?.into())))
                .collect()
        };
        let find = |c: &Self, id: &str| -> Option<(String, &'static str)> {
            let from_v0 = nodes_of(c, M_V0);
            if let Some((_, g)) = from_v0.iter().find(|(k, _)| k == id) {
                return Some((g.clone(), "getClusterNodes of v0"));
            }
            let v1 = nodes_of(c, 1);
            v1.into_iter()
                .find(|(k, _)| k == id)
                .map(|(_, g)| (g, "getClusterNodes of v1"))
        };
        self.wait_until(
            Duration::from_secs(60),
            "v0 lists every validator in gossip",
            |c| who.iter().all(|(_, _, id)| find(c, id).is_some()),
        )?;
        for (name, m, id) in &who {
            let (addr, source) = find(self, id).context("a validator left gossip")?;
            let ip = addr.rsplit_once(':').map_or("", |(ip, _)| ip);
            let line = format!("gossip {name} {id} {addr} ({source})");
            println!("{line}");
            if ip != self.machines.ip(*m).to_string() {
                self.problems.push(format!(
                    "{name} advertises {addr} in gossip ({source}), not an address of its \
                     machine {} ({})",
                    self.machines.names[*m],
                    self.machines.ip(*m)
                ));
            }
            self.gossip.push(line);
        }
        Ok(())
    }

    fn start_watchtower(&mut self) -> anyhow::Result<()> {
        // On the secondary's machine, as the README's guide places it: it reaches the
        // primary's and v0's RPC over the network.
        let p = &self.pair[PRIMARY].node;
        let s = &self.pair[SECONDARY].node;
        let url = |m: usize, port: u16| format!("http://{}:{port}", self.machines.ip(m));
        let log = std::fs::File::create(self.run_dir.join("watchtower.log"))?;
        let child = self
            .machines
            .command(M_SECONDARY, self.bin_dir.join("huione-watchtower"))
            .arg("--standby-ledger")
            .arg(&s.ledger)
            .args(["--standby-rpc", &url(M_SECONDARY, s.rpc_port)])
            .args(["--primary-rpc", &url(M_PRIMARY, p.rpc_port)])
            .arg("--primary-identity")
            .arg(&p.identity_file)
            .args(["--cluster-rpc", &url(M_V0, self.c.nodes[0].rpc_port)])
            .args(["--metrics-port", &self.wt_metrics_port.to_string()])
            .arg("--audit-log")
            .arg(&self.wt_audit)
            // Keep the pair failing over: short cooldown, quick re-arm.
            .args(["--cooldown-ms", "2000", "--rearm-checks", "5"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start huione-watchtower")?;
        self.watchtower = Some(KillOnDrop(child));
        Ok(())
    }

    /// Injects faults until the time is up; each one after the pair settled again.
    fn run_faults(&mut self) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs_f64(self.args.minutes * 60.0);
        let mut menu = Fault::menu(
            self.args.etcd_members,
            self.machines.net.is_some(),
            self.args.full_disk,
        );
        if !self.args.faults.is_empty() {
            for f in &self.args.faults {
                if !menu.iter().any(|k| k.name() == f) {
                    let names: Vec<&str> = menu.iter().map(|k| k.name()).collect();
                    bail!(
                        "--faults {f}: not a fault this set-up can take (it can: {}; the \
                         network cuts need --netns, the full disks --full-disk)",
                        names.join(", ")
                    );
                }
            }
            menu.retain(|k| self.args.faults.iter().any(|f| f == k.name()));
        }
        let mut next_audit = Instant::now() + Duration::from_secs(self.args.audit_every_secs);
        while Instant::now() < end {
            if interrupted() {
                bail!("interrupted by a signal");
            }
            self.wait_until(Duration::from_secs(120), "the pair settles", Self::settled)?;
            // A random moment: anywhere in the next few slots (also inside the identity's
            // leader windows).
            let pause = self.rng.range(500, 4_000);
            self.idle(Duration::from_millis(pause));
            let kind = self.rng.pick(&menu);
            // The last fault may still be playing out (a standby exiting after the
            // primary reclaimed): settle again rather than hit a restarting process.
            if !self.settled() {
                continue;
            }
            self.inject(kind)?;
            if Instant::now() >= next_audit {
                self.audit("periodic")?;
                next_audit = Instant::now() + Duration::from_secs(self.args.audit_every_secs);
            }
        }
        // Let the last fault play out.
        self.wait_until(Duration::from_secs(120), "the pair settles", Self::settled)?;
        self.idle(Duration::from_secs(3));
        Ok(())
    }

    fn inject(&mut self, kind: Fault) -> anyhow::Result<()> {
        let at_ms = now_ms();
        println!(
            "[{:>6.1} s] {}",
            (at_ms - self.started_ms) as f64 / 1000.0,
            kind.name()
        );
        let down_ms = self.rng.range(1_000, 4_000);
        match kind {
            Fault::KillPrimary | Fault::KillSecondary => {
                let who = if kind == Fault::KillPrimary {
                    PRIMARY
                } else {
                    SECONDARY
                };
                let p = &mut self.pair[who];
                p.node.kill9();
                p.restart_at = Some(Instant::now() + Duration::from_millis(down_ms));
            }
            Fault::StopPrimary | Fault::StopSecondary => {
                let who = if kind == Fault::StopPrimary {
                    PRIMARY
                } else {
                    SECONDARY
                };
                let p = &mut self.pair[who];
                p.node.signal(libc::SIGSTOP);
                p.frozen_until = Some(Instant::now() + Duration::from_millis(down_ms));
            }
            Fault::Planned => {
                let out = self.set_identity(SECONDARY)?.wait_with_output()?;
                if !out.status.success() {
                    self.problems.push(format!(
                        "planned set-identity at {at_ms} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            Fault::PlannedRace => {
                let a = self.set_identity(SECONDARY)?;
                let b = self.set_identity(STANDBY2)?;
                let (a, b) = (a.wait_with_output()?, b.wait_with_output()?);
                if !a.status.success() && !b.status.success() {
                    self.problems.push(format!(
                        "both racing set-identity calls at {at_ms} failed: {} / {}",
                        String::from_utf8_lossy(&a.stderr).trim(),
                        String::from_utf8_lossy(&b.stderr).trim()
                    ));
                }
            }
            Fault::EtcdMemberKill => {
                let i = self.rng.range(0, self.args.etcd_members as u64) as usize;
                self.etcd.kill(i);
                self.idle(Duration::from_millis(down_ms));
                self.etcd.restart(i).context("restart the etcd member")?;
            }
            Fault::CutPrimary | Fault::CutPrimarySparingWatchtower => {
                // The primary's machine loses the cluster and etcd; the watchtower's TCP
                // connections to its RPC pass or not.
                let net = self.machines.subnet();
                if kind == Fault::CutPrimarySparingWatchtower {
                    let port = self.pair[PRIMARY].node.rpc_port;
                    net.cut_sparing_tcp(M_PRIMARY, M_SECONDARY, port)
                } else {
                    net.cut(M_PRIMARY)
                }
                .context("cut the primary's machine off the network")?;
                self.idle(Duration::from_millis(down_ms));
                let net = self.machines.subnet();
                net.heal(M_PRIMARY)
                    .context("heal the primary's machine's link")?;
            }
            Fault::EtcdMemberCut => {
                // One member's machine loses the subnet (its peers and every client).
                let i = self.rng.range(0, self.args.etcd_members as u64) as usize;
                println!("           etcd-{i}'s machine cut off for {down_ms} ms");
                let net = self.machines.subnet();
                net.cut(M_ETCD + i)
                    .context("cut the etcd member's machine off the network")?;
                self.idle(Duration::from_millis(down_ms));
                let net = self.machines.subnet();
                net.heal(M_ETCD + i)
                    .context("heal the etcd member's machine's link")?;
            }
            Fault::ClockStep => {
                // One machine's wall clock steps by 0.3-3 s either way (its monotonic clock
                // does not), stays there a while, then steps back.
                let who = if self.rng.range(0, 2) == 0 {
                    PRIMARY
                } else {
                    SECONDARY
                };
                let step_ms = self.rng.range(300, 3_000) as i64;
                let step_ms = if self.rng.range(0, 2) == 0 {
                    step_ms
                } else {
                    -step_ms
                };
                let hold_ms = self.rng.range(3_000, 12_000);
                println!(
                    "           {}'s clock {:+} ms for {} ms",
                    self.pair[who].node.name, step_ms, hold_ms
                );
                self.set_clock(who, step_ms)?;
                self.idle(Duration::from_millis(hold_ms));
                self.set_clock(who, 0)?;
            }
            Fault::FullDiskPrimary | Fault::FullDiskSecondary => {
                // Every free byte of the ledger's tmpfs taken by a filler file for 1-10 s
                // (long enough, at the upper end, for the watchtower's vote-lag rule), then
                // deleted. The node must not send what it cannot record, must say which
                // path is full, and must recover (or exit and come back) once it is freed.
                let who = if kind == Fault::FullDiskPrimary {
                    PRIMARY
                } else {
                    SECONDARY
                };
                let hold_ms = self.rng.range(1_000, 10_000);
                let log_from = self.pair[who].log_len();
                let disk = self.pair[who].disk.as_ref().expect("with --full-disk");
                let filled = disk.fill()?;
                println!(
                    "           {}'s ledger full ({} MiB filler) for {} ms",
                    self.pair[who].node.name,
                    filled >> 20,
                    hold_ms
                );
                self.idle(Duration::from_millis(hold_ms));
                let disk = self.pair[who].disk.as_ref().expect("with --full-disk");
                disk.free()?;
                let mount = disk.mount.to_string_lossy().into_owned();
                let name = self.pair[who].node.name.clone();
                // What the node said about it (its log, from the fault on).
                let log = self.pair[who].log_since(log_from);
                let enospc: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("No space left on device"))
                    .collect();
                let unnamed: Vec<&&str> = enospc.iter().filter(|l| !l.contains(&mount)).collect();
                println!(
                    "           {name} logged {} full-disk error(s), {} not naming a path under {mount}",
                    enospc.len(),
                    unnamed.len(),
                );
                self.disk_errors += enospc.len() as u64;
                if let Some(first) = unnamed.first() {
                    self.problems.push(format!(
                        "{name}: {} full-disk error(s) in {} do not name the path (first: {first})",
                        unnamed.len(),
                        self.pair[who].log_path().display(),
                    ));
                }
            }
            Fault::EtcdMemberFreeze | Fault::EtcdFreeze => {
                let members: Vec<usize> = if kind == Fault::EtcdFreeze {
                    (0..self.args.etcd_members).collect()
                } else {
                    vec![self.rng.range(0, self.args.etcd_members as u64) as usize]
                };
                for &i in &members {
                    self.etcd.freeze(i);
                }
                self.idle(Duration::from_millis(down_ms));
                for &i in &members {
                    self.etcd.thaw(i);
                }
            }
        }
        self.faults.push(FaultRecord {
            kind,
            at_ms,
            first_sent_ms: None,
            first_landed_ms: None,
        });
        Ok(())
    }

    /// Steps `who`'s wall clock to `offset_ms` from the real one (libfaketime re-reads the
    /// file within a second).
    fn set_clock(&self, who: usize, offset_ms: i64) -> anyhow::Result<()> {
        let f = self.pair[who]
            .clock_file
            .as_ref()
            .context("only the pair's primary and secondary run under libfaketime")?;
        let text = format!("{:+.3}s\n", offset_ms as f64 / 1000.0);
        // Write-then-rename: the library never reads half a line.
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, f)?;
        Ok(())
    }

    /// `huione-validator --ledger <who> set-identity <the primary's keypair>`, started on
    /// `who`'s machine.
    fn set_identity(&self, who: usize) -> anyhow::Result<Child> {
        self.machines
            .command(
                self.pair[who].machine,
                self.bin_dir.join("huione-validator"),
            )
            .arg("--ledger")
            .arg(&self.pair[who].node.ledger)
            .arg("set-identity")
            .arg(&self.pair[PRIMARY].node.identity_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run huione-validator set-identity")
    }

    /// Supervises and observes for `d` (less if interrupted).
    fn idle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end && !interrupted() {
            self.tick();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        loop {
            self.tick();
            if ok(self) {
                return Ok(());
            }
            if interrupted() {
                bail!("interrupted by a signal while waiting until {what}");
            }
            if Instant::now() > end {
                bail!(
                    "timed out after {} s waiting until {what}\n{}",
                    timeout.as_secs(),
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One supervision step: thaw, restart, observe the landed vote.
    fn tick(&mut self) {
        let now = Instant::now();
        for p in &mut self.pair {
            if p.frozen_until.is_some_and(|t| now >= t) {
                p.frozen_until = None;
                p.node.signal(libc::SIGCONT);
            }
            if p.frozen_until.is_none() && p.restart_at.is_none() {
                // Exited on its own (lost the lock, newer instance): systemd restarts it.
                if let Some(child) = p.node.child.as_mut() {
                    if let Ok(Some(_)) = child.try_wait() {
                        p.node.child = None;
                        p.restart_at = Some(now + Duration::from_secs(1));
                    }
                }
            }
            if p.restart_at.is_some_and(|t| now >= t) && !interrupted() {
                p.restart_at = None;
                p.restarts += 1;
                if let Err(e) = p.start(&self.machines, &self.faketime_lib) {
                    self.problems
                        .push(format!("cannot restart {}: {e:#}", p.node.name));
                }
            }
        }
        if let Some(last) = self.witness_last_vote() {
            if self.landed.last().is_none_or(|(_, v)| last > *v) {
                self.landed.push((now_ms(), last));
            }
        }
    }

    /// The vote account's last vote as validator 0 (the witness) sees it.
    fn witness_last_vote(&self) -> Option<u64> {
        let va = self
            .machines
            .rpc(M_V0, self.c.nodes[0].rpc_port, "getVoteAccounts", json!([]))?;
        ["current", "delinquent"]
            .iter()
            .filter_map(|k| va["result"][k].as_array())
            .flatten()
            .find(|a| a["votePubkey"] == self.vote_account.as_str())?["lastVote"]
            .as_u64()
    }

    fn identity_on(machines: &Machines, p: &Supervised) -> Option<String> {
        let r = machines.rpc(p.machine, p.node.rpc_port, "getIdentity", json!([]))?;
        r["result"]["identity"].as_str().map(str::to_string)
    }

    fn identity_of(&self, who: usize) -> Option<String> {
        Self::identity_on(&self.machines, &self.pair[who])
    }

    fn primary_runs_identity(&self) -> bool {
        self.identity_of(PRIMARY).as_deref() == Some(self.identity.as_str())
    }

    fn landed_recently(&self, ms: u64) -> bool {
        self.landed
            .last()
            .is_some_and(|(t, _)| now_ms().saturating_sub(*t) <= ms)
    }

    fn watchtower_armed(&self) -> bool {
        self.machines
            .http_get_local(M_SECONDARY, self.wt_metrics_port, "/metrics")
            .is_some_and(|m| m.lines().any(|l| l == "huione_watchtower_armed 1"))
    }

    /// The primary runs the identity and its votes land; both standbys run their own
    /// identities; the watchtower is armed; nothing is frozen or waiting for a restart.
    fn settled(&self) -> bool {
        let own = |i: usize| {
            let id = self.identity_of(i);
            id.is_some() && id.as_deref() != Some(self.identity.as_str())
        };
        self.pair
            .iter()
            .all(|p| p.restart_at.is_none() && p.frozen_until.is_none())
            && self.primary_runs_identity()
            && own(SECONDARY)
            && own(STANDBY2)
            && self.landed_recently(2_000)
            && self.watchtower_armed()
    }

    /// Every ledger: the cluster's validators and the pair's three.
    fn ledgers(&self) -> Vec<PathBuf> {
        self.c
            .nodes
            .iter()
            .map(|n| n.ledger.clone())
            .chain(self.pair.iter().map(|p| p.node.ledger.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// `huione-audit` over every ledger; an error unless it passes. While the nodes run,
    /// the logs are read one after another, so a vote read from one log may be on a block
    /// that another log got after it was read: a periodic audit accepts such unresolved
    /// votes (it still reports them and fails on any violation). The final audit runs
    /// with every validator stopped (SIGSTOP), on a consistent cut, and accepts none.
    fn audit(&mut self, when: &str) -> anyhow::Result<()> {
        self.audits += 1;
        let strict = when == "final";
        let mut cmd = Command::new(self.bin_dir.join("huione-audit"));
        cmd.args(self.ledgers());
        if !strict {
            cmd.arg("--allow-unresolved");
        }
        if strict {
            self.stop_all(libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = cmd.output().context("run huione-audit");
        if strict {
            self.stop_all(libc::SIGCONT);
        }
        let out = out?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!(
            "audit ({when}): {}",
            text.lines().next().unwrap_or("").trim()
        );
        if !out.status.success() {
            bail!(
                "huione-audit ({when}) exited {:?}:\n{text}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Sends `sig` to every validator process (the cluster's and the pair's).
    fn stop_all(&self, sig: i32) {
        for n in &self.c.nodes {
            n.signal(sig);
        }
        for p in &self.pair {
            if p.frozen_until.is_none() || sig == libc::SIGSTOP {
                p.node.signal(sig);
            }
        }
    }

    /// Every ledger's records as far as they can be read now (for the figures; the
    /// verdict is huione-audit's, which refuses a missing or torn log).
    fn records(&self) -> Vec<AuditRecord> {
        let mut all = Vec::new();
        for l in self.ledgers() {
            match huione_validator::ledger::audit_log::read_records(&l) {
                Ok(r) => all.extend(r),
                Err(e) => eprintln!("figures: {e}"),
            }
        }
        all
    }

    /// Fault -> first vote sent (audit logs) and landed (the witness's view).
    fn measure_faults(&mut self) {
        let votes: Vec<(u64, u64)> = {
            let mut v: Vec<(u64, u64)> = self
                .records()
                .into_iter()
                .filter_map(|r| match r {
                    AuditRecord::Vote(v) if v.node.to_string() == self.identity => {
                        Some((v.time_ms, v.slot))
                    }
                    _ => None,
                })
                .collect();
            v.sort_unstable();
            v
        };
        let landed = self.landed.clone();
        for f in &mut self.faults {
            let Some(&(sent, slot)) = votes.iter().find(|(t, _)| *t >= f.at_ms) else {
                continue;
            };
            f.first_sent_ms = Some(sent - f.at_ms);
            f.first_landed_ms = landed
                .iter()
                .find(|(t, v)| *t >= f.at_ms && *v >= slot)
                .map(|(t, _)| t - f.at_ms);
        }
    }

    fn report(&mut self) -> String {
        self.measure_faults();
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "== huione-nemesis report: seed {}, {} min, {} etcd member(s), {} ms slots",
            self.seed, self.args.minutes, self.args.etcd_members, self.args.slot_ms
        ));
        // Where everything ran ("-": this host's network), and the addresses the cluster
        // saw in gossip.
        for l in self.machines.listing() {
            line(l);
        }
        for l in &self.gossip {
            line(l.clone());
        }
        // Faults by kind, with their timings.
        let mut by_kind: BTreeMap<Fault, Vec<&FaultRecord>> = BTreeMap::new();
        for f in &self.faults {
            by_kind.entry(f.kind).or_default().push(f);
        }
        line(format!("faults: {} in all", self.faults.len()));
        line(format!(
            "  {:<30} {:>5}  {:>26}  {:>26}",
            "kind", "n", "-> first vote sent p50/p99/max", "-> landed p50/p99/max (ms)"
        ));
        for (kind, fs) in &by_kind {
            let sent: Vec<u64> = fs.iter().filter_map(|f| f.first_sent_ms).collect();
            let landed: Vec<u64> = fs.iter().filter_map(|f| f.first_landed_ms).collect();
            line(format!(
                "  {:<30} {:>5}  {:>26}  {:>26}",
                kind.name(),
                fs.len(),
                percentiles(&sent),
                percentiles(&landed)
            ));
        }
        let all_sent: Vec<u64> = self.faults.iter().filter_map(|f| f.first_sent_ms).collect();
        let all_landed: Vec<u64> = self
            .faults
            .iter()
            .filter_map(|f| f.first_landed_ms)
            .collect();
        line(format!(
            "  {:<30} {:>5}  {:>26}  {:>26}",
            "all",
            self.faults.len(),
            percentiles(&all_sent),
            percentiles(&all_landed)
        ));
        // Failovers: every acquire of the identity's tower lock, by reason, from etcd.
        match self.lock_history() {
            Ok(h) => {
                let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
                for r in &h {
                    *reasons.entry(r.clone()).or_default() += 1;
                }
                let changes = h.len().saturating_sub(1);
                line(format!(
                    "failovers (identity changed hands, from the etcd lock history): {changes}; \
                     acquires by reason: {reasons:?}"
                ));
            }
            Err(e) => line(format!("failovers: cannot read the lock history: {e:#}")),
        }
        let wt = std::fs::read_to_string(&self.wt_audit).unwrap_or_default();
        let mut wt_results: BTreeMap<String, u64> = BTreeMap::new();
        for l in wt.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(l) {
                let r = v["result"].as_str().unwrap_or("?").to_string();
                *wt_results.entry(r).or_default() += 1;
            }
        }
        line(format!("watchtower failovers by result: {wt_results:?}"));
        let restarts: Vec<String> = self
            .pair
            .iter()
            .map(|p| format!("{} {}", p.node.name, p.restarts))
            .collect();
        line(format!(
            "restarts by the supervisor: {}",
            restarts.join(", ")
        ));
        // Vote slots missed and leader slots skipped, over the campaign.
        let (missed, witness_voted, skipped, led) = self.slot_figures();
        line(format!(
            "vote slots missed: {missed} of {witness_voted} the witness voted on; \
             leader slots skipped: {skipped} of {led} the identity led"
        ));
        let (longest, from) = self
            .landed
            .windows(2)
            .map(|w| (w[1].0 - w[0].0, w[0].0))
            .max()
            .unwrap_or((0, self.started_ms));
        line(format!(
            "longest time without a landed vote: {longest} ms, from {:.1} s ({} landed-vote \
             changes seen)",
            from.saturating_sub(self.started_ms) as f64 / 1000.0,
            self.landed.len()
        ));
        line(format!("audits run: {}", self.audits));
        if self.args.full_disk {
            line(format!(
                "full-disk errors the nodes logged (votes and blocks not sent): {}",
                self.disk_errors
            ));
        }
        match self.landed_votes_checked {
            Some((n, missing)) => line(format!(
                "votes of the vote account in stored blocks: {n}, without an audit record: {missing}"
            )),
            None => line("votes of the vote account in stored blocks: not checked".into()),
        }
        out
    }

    /// (missed, witness voted, skipped, led) between the first fault and the end.
    fn slot_figures(&self) -> (usize, usize, usize, usize) {
        let records = self.records();
        let g = &self.c.genesis;
        let from = g.slot_at(self.faults.first().map_or(self.started_ms, |f| f.at_ms));
        // Leave the last slots out: their blocks and votes may still be in flight.
        let to = g.slot_at(now_ms()).saturating_sub(8);
        let witness = self.c.keys[0].0.pubkey();
        let id = self.c.keys[PAIR].0.pubkey();
        let mut ours = BTreeSet::new();
        let mut theirs = BTreeSet::new();
        let mut blocks = BTreeSet::new();
        for r in &records {
            match r {
                AuditRecord::Vote(v) if v.node == id => {
                    ours.insert(v.slot);
                }
                AuditRecord::Vote(v) if v.node == witness => {
                    theirs.insert(v.slot);
                }
                AuditRecord::Block(b) if b.leader == id => {
                    blocks.insert(b.slot);
                }
                _ => {}
            }
        }
        let window = from..to;
        let witness_voted: Vec<&u64> = theirs.iter().filter(|s| window.contains(s)).collect();
        let missed = witness_voted.iter().filter(|s| !ours.contains(s)).count();
        let mut schedule = ScheduleCache::default();
        let led: Vec<u64> = window
            .clone()
            .filter(|s| schedule.leader_at(g, *s) == id)
            .collect();
        let skipped = led.iter().filter(|s| !blocks.contains(s)).count();
        (missed, witness_voted.len(), skipped, led.len())
    }

    /// Reasons of every acquire of the identity's lock (`huione-tower history`), oldest
    /// first.
    fn lock_history(&self) -> anyhow::Result<Vec<String>> {
        // From the secondary's machine, as an operator there would.
        let mut cmd = self
            .machines
            .command(M_SECONDARY, self.bin_dir.join("huione-tower"));
        cmd.arg("history")
            .args(["--identity", &self.identity])
            .args(self.etcd.validator_flags())
            .args(["--output", "json"]);
        let out = cmd.output().context("run huione-tower history")?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr));
        }
        let v: Value =
            serde_json::from_slice(&out.stdout).context("huione-tower history --json")?;
        let list = v.as_array().context("huione-tower history: not a list")?;
        // Only acquires: the history also holds the `finished` and `released` records
        // that end them (their `event`; a record without one is an acquire).
        Ok(list
            .iter()
            .filter(|r| r["owner"]["event"].as_str().is_none_or(|e| e == "acquired"))
            .map(|r| r["owner"]["reason"].as_str().unwrap_or("?").to_string())
            .collect())
    }

    /// Stops the watchtower and every validator (SIGKILL), so that their block stores
    /// and audit logs can be read as they are.
    fn stop_validators(&mut self) {
        drop(self.watchtower.take());
        for p in &mut self.pair {
            p.node.signal(libc::SIGCONT);
            p.node.kill9();
            p.frozen_until = None;
        }
        for n in &mut self.c.nodes {
            n.kill9();
        }
    }

    /// Every vote of the vote account that some stored block carries (it left its
    /// sender, in a vote or in a block) has a record in some audit log: a vote that
    /// left without one is evidence lost. Run with the validators stopped.
    fn check_landed_votes_recorded(&mut self) {
        let va = self.c.keys[PAIR].1.pubkey();
        let recorded: BTreeSet<(u64, [u8; 32])> = self
            .records()
            .into_iter()
            .filter_map(|r| match r {
                AuditRecord::Vote(v) if v.vote_account == va => Some((v.slot, v.hash.0)),
                _ => None,
            })
            .collect();
        let mut seen = BTreeSet::new();
        let mut missing = BTreeSet::new();
        for ledger in self.ledgers() {
            let blocks = ledger.join("blocks");
            let read = BlockStore::open(&blocks, 64 << 20).and_then(|(s, _)| s.read_from(0));
            let blocks = match read {
                Ok(b) => b,
                Err(e) => {
                    self.problems.push(format!(
                        "cannot read the block store {}: {e:#}",
                        blocks.display()
                    ));
                    continue;
                }
            };
            for b in blocks {
                for v in b.votes.iter().filter(|v| v.vote_account == va) {
                    let key = (v.slot, v.hash.0);
                    seen.insert(key);
                    if !recorded.contains(&key) {
                        missing.insert((key.0, b.slot, ledger.clone()));
                    }
                }
            }
        }
        let missing_votes: BTreeSet<u64> = missing.iter().map(|m| m.0).collect();
        if let Some((slot, block, ledger)) = missing.first() {
            // Where such blocks are stored: only in the pair's own ledgers (produced, not
            // sent: they could still be served by repair) or also in the witnesses'
            // (they left).
            let mut names: Vec<String> = missing
                .iter()
                .filter_map(|m| m.2.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            names.dedup();
            names.sort();
            names.dedup();
            self.problems.push(format!(
                "{} vote(s) of the vote account are carried by stored blocks without an audit \
                 record (first: the vote for slot {slot} in block {block}, stored in {}; such \
                 blocks are in the ledgers of {})",
                missing_votes.len(),
                ledger.display(),
                names.join(", ")
            ));
        }
        self.landed_votes_checked = Some((seen.len(), missing_votes.len()));
    }

    fn diagnostics(&self) -> String {
        let mut s = String::new();
        for p in &self.pair {
            s.push_str(&format!(
                "---- {} (identity {:?}) ----\n{}\n",
                p.node.name,
                Self::identity_on(&self.machines, p),
                huione_testkit::nodes::tail(&p.node.log(), 15)
            ));
        }
        s.push_str(&format!(
            "watchtower armed: {}; last landed vote: {:?}\n",
            self.watchtower_armed(),
            self.landed.last()
        ));
        s
    }

    /// Stops every process. With `keep`, the cluster's directory stays (under the run
    /// directory).
    fn shutdown(mut self, keep: bool) {
        self.stop_validators();
        // The ledgers on tmpfs: a kept run keeps their files (copied out, then unmounted).
        for p in &mut self.pair {
            if let Some(mut d) = p.disk.take() {
                if let Err(e) = d.unmount(keep) {
                    eprintln!("{e:#}");
                }
            }
        }
        for i in 0..self.args.etcd_members {
            self.etcd.thaw(i);
        }
        self.etcd.stop(Duration::from_secs(5));
        if keep {
            // The cluster's temp dir is under the run directory: do not delete it.
            std::mem::forget(self.c);
        }
        // The rest drops here, `machines` (the namespaces) last.
    }
}

impl Supervised {
    fn log_path(&self) -> PathBuf {
        self.node.ledger.with_extension("log")
    }

    /// The length of its log now.
    fn log_len(&self) -> u64 {
        std::fs::metadata(self.log_path()).map_or(0, |m| m.len())
    }

    /// Its log from byte `from` on.
    fn log_since(&self, from: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut bytes = Vec::new();
        if let Ok(mut f) = std::fs::File::open(self.log_path()) {
            if f.seek(SeekFrom::Start(from)).is_ok() {
                let _ = f.read_to_end(&mut bytes);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Starts the process on its machine (with a clock file, under libfaketime).
    fn start(&mut self, machines: &Machines, faketime_lib: &Path) -> anyhow::Result<()> {
        let clock = self.clock_file.as_deref().map(|f| (faketime_lib, f));
        start_node(machines, self.machine, &mut self.node, clock)
    }
}

/// Starts `node` on machine `m`, stderr appended to `<ledger>.log` as `Node::start` does.
/// With `clock` (libfaketime, the offset file), only the wall clock follows the file (the
/// monotonic clock stays real, as after an NTP step).
fn start_node(
    machines: &Machines,
    m: usize,
    node: &mut Node,
    clock: Option<(&Path, &Path)>,
) -> anyhow::Result<()> {
    let log_path = node.ledger.with_extension("log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the node's log {}", log_path.display()))?;
    let mut cmd = machines.command(m, &node.bin);
    cmd.args(&node.args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some((lib, file)) = clock {
        cmd.env("LD_PRELOAD", lib)
            .env("FAKETIME_TIMESTAMP_FILE", file)
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {} ({})", node.name, node.bin.display()))?;
    node.child = Some(child);
    Ok(())
}

/// Makes `node` bind `bind` and reach its entrypoint on `entry_ip` (same port).
fn rebind(node: &mut Node, bind: IpAddr, entry_ip: IpAddr) {
    if let Some(i) = node.args.iter().position(|a| a == "--entrypoint") {
        let port = node.args[i + 1]
            .rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .expect("HOST:PORT");
        node.args[i + 1] = format!("{entry_ip}:{port}");
    }
    match node.args.iter().position(|a| a == "--bind-address") {
        Some(i) => node.args[i + 1] = bind.to_string(),
        None => node
            .args
            .extend(["--bind-address".to_string(), bind.to_string()]),
    }
}

/// "p50/p99/max" in ms, or "-" without samples.
fn percentiles(v: &[u64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    format!("{}/{}/{}", at(0.5), at(0.99), s[s.len() - 1])
}

/// libfaketime's shared library (`scripts/deps.sh` installs the `faketime` package).
fn find_libfaketime() -> anyhow::Result<PathBuf> {
    let dirs = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ];
    dirs.iter()
        .map(|d| Path::new(d).join("faketime/libfaketime.so.1"))
        .find(|p| p.is_file())
        .context(
            "libfaketime.so.1 not found under /usr/lib/*/faketime/ (the clock-step fault needs \
             it): install it with scripts/deps.sh (apt-get install -y faketime)",
        )
}

/// A small tmpfs mounted on a validator's ledger directory (`--full-disk`, as root). The
/// `full-disk-*` faults fill it with a filler file, then delete it. Unmounted on drop
/// (its files copied out first, for the run directory).
struct Disk {
    mount: PathBuf,
    mounted: bool,
}

impl Disk {
    fn mount(dir: &Path, mb: u64) -> anyhow::Result<Disk> {
        if mb == 0 {
            bail!("--disk-mb 0: give the ledgers' tmpfs a size in MiB (e.g. 128)");
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the ledger directory {}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m,mode=0700")])
            .arg("huione-nemesis")
            .arg(dir)
            .output()
            .context("run mount")?;
        if !out.status.success() {
            bail!(
                "--full-disk: `mount -t tmpfs` on {} failed (it needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Disk {
            mount: dir.to_path_buf(),
            mounted: true,
        })
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("nemesis-filler")
    }

    /// Takes every free byte (1 MiB writes, then 4 KiB ones, until the disk refuses);
    /// returns the filler's size.
    fn fill(&self) -> anyhow::Result<u64> {
        use std::io::Write;
        let path = self.filler();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot create the filler {}", path.display()))?;
        for chunk in [1 << 20, 4096] {
            let buf = vec![0u8; chunk];
            loop {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot fill {}", path.display()))
                    }
                }
            }
        }
        Ok(f.metadata()?.len())
    }

    fn free(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.filler()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e)
                .with_context(|| format!("cannot delete the filler {}", self.filler().display())),
            _ => Ok(()),
        }
    }

    /// Unmounts (nothing may run on it any more); with `keep` its files stay at the same
    /// path, on the disk below.
    fn unmount(&mut self, keep: bool) -> anyhow::Result<()> {
        if !self.mounted {
            return Ok(());
        }
        self.free()?;
        let saved = self.mount.with_extension("saved");
        if keep {
            let st = Command::new("cp")
                .arg("-a")
                .arg(self.mount.join("."))
                .arg(&saved)
                .status();
            if !st.is_ok_and(|s| s.success()) {
                eprintln!(
                    "cannot copy {} out of its tmpfs to {}",
                    self.mount.display(),
                    saved.display()
                );
            }
        }
        let mut unmounted = false;
        for _ in 0..50 {
            let st = Command::new("umount")
                .arg(&self.mount)
                .stderr(Stdio::null())
                .status();
            if st.is_ok_and(|s| s.success()) {
                unmounted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !unmounted {
            // Still busy after 5 s: detach it now, freed when the last user goes.
            let st = Command::new("umount").arg("-l").arg(&self.mount).status();
            if !st.is_ok_and(|s| s.success()) {
                bail!(
                    "cannot unmount the tmpfs on {}: unmount it by hand (umount {})",
                    self.mount.display(),
                    self.mount.display()
                );
            }
        }
        self.mounted = false;
        if keep && saved.is_dir() {
            let _ = std::fs::remove_dir(&self.mount);
            std::fs::rename(&saved, &self.mount).with_context(|| {
                format!(
                    "cannot move {} to {}",
                    saved.display(),
                    self.mount.display()
                )
            })?;
        }
        Ok(())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Err(e) = self.unmount(true) {
            eprintln!("{e:#}");
        }
    }
}
