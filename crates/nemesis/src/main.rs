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
//! clock steps; the monotonic clock does not), and with `--netns` the primary cut off the
//! network (its veth drops everything) with or without the watchtower's path (the
//! watchtower reaches the primary's RPC over a separate forwarder into the namespace, a
//! "management network", which the cut blackholes or spares). It
//! plays systemd: a validator that exits or was killed is started again with its own
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
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use huione_core::audit::AuditRecord;
use huione_core::ScheduleCache;
use huione_testkit::netns::NetnsLink;
use huione_testkit::nodes::{free_port, now_ms, Cluster, Node};
use huione_testkit::EtcdCluster;
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
    /// Run the primary in its own network namespace joined by a veth pair (needs root)
    /// and add the fault "cut the primary off the network" (every packet on the link
    /// dropped, the watchtower's path included).
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

/// A validator process the campaign supervises: restarted after it exits or is killed.
struct Supervised {
    node: Node,
    /// When to start it again (None: running, or paused on purpose).
    restart_at: Option<Instant>,
    /// SIGSTOPped until then (then SIGCONT).
    frozen_until: Option<Instant>,
    restarts: u64,
    /// The address it binds (and is reached at).
    ip: IpAddr,
    /// Started inside the network namespace.
    in_netns: bool,
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
    watchtower: Option<Child>,
    /// The primary's namespace and link (`--netns`).
    net: Option<NetnsLink>,
    /// The watchtower's path to the primary's RPC (`--netns`): a forwarder from the host
    /// into the namespace that does not use the veth, so cutting the link can spare it.
    wt_path: Option<Blackhole>,
    /// libfaketime, preloaded into the pair's primary and secondary.
    faketime_lib: PathBuf,
    /// Where the other nodes bind: 127.0.0.1, or the host end of the veth.
    host_ip: IpAddr,
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
        let net = if args.netns {
            Some(NetnsLink::create().context(
                "--netns needs a network namespace (run as root: `ip netns add` needs \
                 CAP_SYS_ADMIN)",
            )?)
        } else {
            None
        };
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let host_ip = net.as_ref().map_or(loopback, |n| IpAddr::V4(n.host_ip()));
        let primary_ip = net.as_ref().map_or(loopback, |n| IpAddr::V4(n.ns_ip()));
        let etcd = if net.is_some() {
            // Members also listen on the host end of the veth, for the primary.
            std::env::set_var("HUIONE_TESTKIT_KEEP", "1");
            EtcdCluster::start_with_client_ips(args.etcd_members, &[host_ip])
        } else {
            EtcdCluster::start_in(&run_dir.join("etcd-cluster"), args.etcd_members)
        }
        .context("start etcd")?;
        let mut c = Cluster::new(bin_dir.join("huione-validator"), 3, args.slot_ms);
        let flags = etcd.validator_flags();
        let entry = c.nodes[0].gossip_port;
        let primary_flags = if net.is_some() {
            etcd.validator_flags_on(host_ip)
        } else {
            flags.clone()
        };
        c.nodes[PAIR] = c.node_spec("primary", PAIR, Some(entry), &primary_flags);
        let mut secondary = c.standby_spec("secondary", PAIR, &flags, true);
        let mut standby2 = c.standby_spec("standby2", PAIR, &flags, true);
        if net.is_some() {
            for node in &mut c.nodes[..PAIR] {
                rebind(node, host_ip, host_ip);
            }
            rebind(&mut c.nodes[PAIR], primary_ip, host_ip);
            rebind(&mut secondary, host_ip, host_ip);
            rebind(&mut standby2, host_ip, host_ip);
        }
        let identity = c.keys[PAIR].0.pubkey().to_string();
        let vote_account = c.keys[PAIR].1.pubkey().to_string();
        println!("cluster in {}", c.path().display());
        for n in &mut c.nodes[..PAIR] {
            n.start();
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
        for (i, node) in [primary, secondary, standby2].into_iter().enumerate() {
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
                ip: if i == PRIMARY { primary_ip } else { host_ip },
                in_netns: i == PRIMARY && net.is_some(),
                disk,
                clock_file,
            });
        }
        for p in &mut pair {
            p.start(net.as_ref(), &faketime_lib);
        }
        let wt_path = match &net {
            Some(n) => Some(
                Blackhole::start(n, SocketAddr::new(primary_ip, pair[PRIMARY].node.rpc_port))
                    .context("start the watchtower's path to the primary")?,
            ),
            None => None,
        };
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
            net,
            wt_path,
            faketime_lib,
            host_ip,
            wt_metrics_port: free_port(),
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
            args,
        };
        // The watchtower starts once the primary votes and the secondary is caught up.
        campaign
            .wait_until(Duration::from_secs(120), "the primary votes", |c| {
                c.primary_runs_identity() && c.landed_recently(3_000)
            })
            .context("the cluster did not start")?;
        campaign.start_watchtower()?;
        Ok(campaign)
    }

    fn start_watchtower(&mut self) -> anyhow::Result<()> {
        let p = &self.pair[PRIMARY].node;
        let s = &self.pair[SECONDARY].node;
        let url_p = match &self.wt_path {
            Some(path) => format!("http://{}", path.addr()),
            None => format!("http://{}:{}", self.pair[PRIMARY].ip, p.rpc_port),
        };
        let url = |port: u16| format!("http://{}:{port}", self.host_ip);
        let log = std::fs::File::create(self.run_dir.join("watchtower.log"))?;
        let child = Command::new(self.bin_dir.join("huione-watchtower"))
            .arg("--standby-ledger")
            .arg(&s.ledger)
            .args(["--standby-rpc", &url(s.rpc_port)])
            .args(["--primary-rpc", &url_p])
            .arg("--primary-identity")
            .arg(&p.identity_file)
            .args(["--cluster-rpc", &url(self.c.nodes[0].rpc_port)])
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
        self.watchtower = Some(child);
        Ok(())
    }

    /// Injects faults until the time is up; each one after the pair settled again.
    fn run_faults(&mut self) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs_f64(self.args.minutes * 60.0);
        let mut menu = Fault::menu(
            self.args.etcd_members,
            self.net.is_some(),
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
                // The veth carries the cluster, etcd and (unless spared) the watchtower's
                // path: its forwarder is blackholed with the link.
                let spare = kind == Fault::CutPrimarySparingWatchtower;
                let net = self.net.as_mut().expect("only in the menu with --netns");
                net.cut().context("cut the primary's link")?;
                let path = self.wt_path.as_ref().expect("with --netns");
                path.set_blocked(!spare);
                self.idle(Duration::from_millis(down_ms));
                let net = self.net.as_mut().expect("still there");
                net.heal().context("heal the primary's link")?;
                self.wt_path
                    .as_ref()
                    .expect("with --netns")
                    .set_blocked(false);
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

    /// `huione-validator --ledger <who> set-identity <the primary's keypair>`, started.
    fn set_identity(&self, who: usize) -> anyhow::Result<Child> {
        Command::new(self.bin_dir.join("huione-validator"))
            .arg("--ledger")
            .arg(&self.pair[who].node.ledger)
            .arg("set-identity")
            .arg(&self.pair[PRIMARY].node.identity_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run huione-validator set-identity")
    }

    /// Supervises and observes for `d`.
    fn idle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
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
            if p.restart_at.is_some_and(|t| now >= t) {
                p.restart_at = None;
                p.restarts += 1;
                p.start(self.net.as_ref(), &self.faketime_lib);
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
        let va = rpc_at(
            self.host_ip,
            self.c.nodes[0].rpc_port,
            "getVoteAccounts",
            json!([]),
        )?;
        ["current", "delinquent"]
            .iter()
            .filter_map(|k| va["result"][k].as_array())
            .flatten()
            .find(|a| a["votePubkey"] == self.vote_account.as_str())?["lastVote"]
            .as_u64()
    }

    fn identity_of(p: &Supervised) -> Option<String> {
        rpc_at(p.ip, p.node.rpc_port, "getIdentity", json!([]))?["result"]["identity"]
            .as_str()
            .map(str::to_string)
    }

    fn primary_runs_identity(&self) -> bool {
        Self::identity_of(&self.pair[PRIMARY]).as_deref() == Some(self.identity.as_str())
    }

    fn landed_recently(&self, ms: u64) -> bool {
        self.landed
            .last()
            .is_some_and(|(t, _)| now_ms().saturating_sub(*t) <= ms)
    }

    fn watchtower_armed(&self) -> bool {
        http_get(self.wt_metrics_port, "/metrics")
            .is_some_and(|m| m.lines().any(|l| l == "huione_watchtower_armed 1"))
    }

    /// The primary runs the identity and its votes land; both standbys run their own
    /// identities; the watchtower is armed; nothing is frozen or waiting for a restart.
    fn settled(&self) -> bool {
        let own = |i: usize| {
            let id = Self::identity_of(&self.pair[i]);
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
        let mut cmd = Command::new(self.bin_dir.join("huione-tower"));
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
        if let Some(mut w) = self.watchtower.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
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
                Self::identity_of(p),
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
        drop(self.wt_path.take());
        if let Some(mut net) = self.net.take() {
            let _ = net.heal();
            drop(net);
        }
        if keep {
            // The cluster's temp dir is under the run directory: do not delete it.
            std::mem::forget(self.c);
        }
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

    /// Starts the process (inside the namespace for the primary with `--netns`), stderr
    /// appended to `<ledger>.log` as `Node::start` does.
    /// With a clock file, under libfaketime: only the wall clock follows the file (the
    /// monotonic clock stays real, as after an NTP step).
    fn start(&mut self, net: Option<&NetnsLink>, faketime_lib: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.node.ledger.with_extension("log"))
            .expect("open the node's log");
        let mut cmd = match net.filter(|_| self.in_netns) {
            None => Command::new(&self.node.bin),
            Some(net) => net.command(&self.node.bin),
        };
        cmd.args(&self.node.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(f) = &self.clock_file {
            cmd.env("LD_PRELOAD", faketime_lib)
                .env("FAKETIME_TIMESTAMP_FILE", f)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        self.node.child = Some(cmd.spawn().expect("start the validator"));
    }
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

/// One JSON-RPC call over HTTP/1.1 to `ip:port` (1 s to connect, 3 s to read).
fn rpc_at(ip: IpAddr, port: u16, method: &str, params: Value) -> Option<Value> {
    use std::io::{Read, Write};
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let mut s =
        std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {ip}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    serde_json::from_str(resp.split_once("\r\n\r\n")?.1).ok()
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

/// `GET path` on 127.0.0.1:port; the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    Some(r.split_once("\r\n\r\n")?.1.to_string())
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

/// A TCP path from 127.0.0.1 on the host to an address inside the namespace that does
/// not use the veth (its connecting threads join the namespace), like a management
/// network; unlike the link it can be blackholed on its own: while blocked, nothing is
/// copied either way and new connections get no answer (as through a cut link).
struct Blackhole {
    addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blackhole {
    fn start(net: &NetnsLink, target: SocketAddr) -> anyhow::Result<Blackhole> {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let ns_path = format!("/var/run/netns/{}", net.name());
        let ns = std::fs::File::open(&ns_path).with_context(|| format!("open {ns_path}"))?;
        let (blocked, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (b, st) = (blocked.clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // Threads spawned from here inherit the namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            let _ = tx.send(rc == 0);
            if rc != 0 {
                return;
            }
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (b, st) = (b.clone(), st.clone());
                        std::thread::spawn(move || relay(client, target, &b, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        if !rx.recv().unwrap_or(false) {
            bail!("cannot join the namespace {ns_path} (setns)");
        }
        Ok(Blackhole {
            addr,
            blocked,
            stop,
            thread: Some(thread),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies both ways between `client` and a new connection to `target` until either side
/// closes; nothing moves while `blocked`.
fn relay(client: std::net::TcpStream, target: SocketAddr, blocked: &AtomicBool, stop: &AtomicBool) {
    use std::io::{ErrorKind, Read, Write};
    let held = |stop: &AtomicBool| {
        while blocked.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    held(stop);
    let Ok(server) = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
        return;
    };
    let mut ends = [client, server];
    for e in &ends {
        if e.set_read_timeout(Some(Duration::from_millis(50))).is_err() {
            return;
        }
    }
    let mut buf = [0u8; 16 * 1024];
    let mut open = [true, true];
    while (open[0] || open[1]) && !stop.load(Ordering::Relaxed) {
        held(stop);
        for from in 0..2 {
            if !open[from] {
                continue;
            }
            let to = 1 - from;
            match ends[from].read(&mut buf) {
                Ok(0) => {
                    open[from] = false;
                    let _ = ends[to].shutdown(std::net::Shutdown::Write);
                }
                Ok(n) => {
                    if ends[to].write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    }
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
