//! Failover, measured with real processes: a local cluster (`huione-local-cluster` next to
//! this binary: 3 validators, the last one the primary with its tower in etcd over mTLS,
//! plus a hot-standby secondary), on a 1-member and a 3-member etcd, 400 ms slots.
//!
//! * `planned`: as the operator guide says, `huione-validator wait-for-restart-window
//!   --identity …`, then `set-identity` on the secondary. Prints ms from the
//!   command to the first vote by the secondary, from the command to the primary's exit
//!   (the primary learns it lost the lock at its next store, or from gossip), and the vote
//!   slots the identity missed (slots a healthy validator voted on around the failover
//!   that the identity did not).
//! * `kill` / `stop`: `huione-watchtower` with its default settings runs next to the
//!   secondary; the primary gets SIGKILL / SIGSTOP. Prints ms from the fault to the
//!   watchtower's decision and to the first vote by the secondary, and how many of the
//!   slots in between the identity itself leads (nobody can produce those, so nothing can
//!   be voted on until the next leader's block: a fault just before the identity's leader
//!   window costs up to that window). For `stop` the primary is resumed after the
//!   takeover: prints ms from SIGCONT to its exit (its first store finds the lock lost)
//!   and the votes it sent after resuming (must be 0).
//! * `kill-leader`: SIGKILL a quarter slot before the identity's leader window (the
//!   worst phase), to show that cost.
//! * `planned-random`: `set-identity` at a random moment (no waiting for a restart
//!   window); `planned-window`: `set-identity` half a slot into the identity's own leader
//!   window. Both must skip no leader slot.
//! * `cutoff`: cut off but answering. The primary keeps running and its RPC keeps
//!   answering the watchtower, but its UDP port (gossip, votes, blocks: everything it
//!   exchanges with other nodes) is cut both ways: an nftables table of this bench's own
//!   drops every loopback packet to or from that port on input, silently (senders see no
//!   error, as in a real partition; etcd and RPC are TCP and still pass). Prints the same
//!   columns as `stop`, with the heal in place of SIGCONT: ms from the heal to the old
//!   primary's exit (it hears the newer instance in gossip, or its next store finds the
//!   lock lost) and the votes it sent after the standby's first vote (must be 0). Blocks
//!   the cut-off primary produced after the cut reached nobody: they count as skipped.
//!   Needs root and `nft` (`apt-get install -y nftables`); the table is named after this
//!   process (`huione_failover_bench_<pid>`), removed at the heal, when a round fails, on
//!   Ctrl-C / SIGTERM, and, if a run was killed outright, by the next run that uses it.
//! * `healthy`: the pair and the watchtower at its defaults run untouched for
//!   `--healthy-secs`; prints the failovers the watchtower ordered (must be 0).
//!
//! Besides the times to the first vote *sent*, every round prints the time to the first
//! vote *landed* (the witness node's `getVoteAccounts` shows the account's `lastVote` at
//! or past the secondary's first vote: what vote credits and delinquency see) and the
//! identity's **leader slots skipped** from the fault (or command) to 12 slots after the
//! first landed vote: slots the schedule gives the identity that neither machine produced.
//! Each case ends with p50/p99/max over its rounds. Every round ends with the auditor
//! over every ledger.
//!
//! `cargo build --release -p huione-validator -p huione-cluster -p huione-watchtower \
//!  -p huione-bench && target/release/failover-bench [--rounds N] [--cases cutoff,kill,...]`
//! (20 rounds per case and etcd size by default; every case but `healthy` by default).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use huione_bench::http_get;
use huione_cluster::manifest::{ClusterManifest, NodeEntry};
use huione_cluster::plan::Role;
use huione_core::audit::{AuditRecord, Auditor};
use huione_core::{Genesis, ScheduleCache};
use huione_os::clock::now_ms;

#[derive(Parser)]
struct Args {
    /// Rounds per case and etcd size.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Cases to run (comma separated): planned, planned-random, planned-window, kill, stop,
    /// kill-leader, cutoff, healthy.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "planned,planned-random,planned-window,kill,stop,kill-leader,cutoff"
    )]
    cases: Vec<Case>,
    /// How long the `healthy` case runs the pair untouched.
    #[arg(long, default_value_t = 600)]
    healthy_secs: u64,
    /// etcd cluster sizes (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    members: Vec<usize>,
    /// Slot length.
    #[arg(long, default_value_t = 400)]
    slot_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Case {
    Planned,
    PlannedRandom,
    PlannedWindow,
    Kill,
    Stop,
    KillLeader,
    Cutoff,
    Healthy,
}

impl Case {
    fn planned(self) -> bool {
        matches!(
            self,
            Case::Planned | Case::PlannedRandom | Case::PlannedWindow
        )
    }
}

/// p50/p99/max of `v` (empty: dashes).
fn dist(v: &mut [u64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("{}/{}/{}", at(0.5), at(0.99), v[v.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("no exe dir")?;
    for tool in [
        "huione-local-cluster",
        "huione-validator",
        "huione-watchtower",
    ] {
        if !bin.join(tool).exists() {
            bail!(
                "{} not found: build it with cargo build --release -p huione-validator \
                 -p huione-cluster -p huione-watchtower -p huione-bench",
                bin.join(tool).display()
            );
        }
    }
    if args.cases.contains(&Case::Cutoff) {
        UdpCut::preflight()?;
    }
    remove_cut_on_signal(args.cases.contains(&Case::Cutoff));
    for case in &args.cases {
        println!();
        if *case == Case::Healthy {
            for &members in &args.members {
                match healthy_run(&bin, members, args.slot_ms, args.healthy_secs) {
                    Ok((failovers, votes)) => println!(
                        "healthy pair, {members} member etcd, {} s, watchtower defaults: {failovers} failovers ordered (target 0), {votes} votes by the primary",
                        args.healthy_secs
                    ),
                    Err(e) => println!("healthy pair, {members} member etcd: FAILED: {e:#}"),
                }
            }
            continue;
        }
        let (mut sent, mut landed, mut skipped, mut missed) = (vec![], vec![], vec![], vec![]);
        let mut decided = vec![];
        match case {
            c if c.planned() => println!(
                "planned failover ({}), {} ms slots\n{:<10} {:>5} {:>20} {:>20} {:>18} {:>14} {:>14} {:>18} {:>8}",
                match c {
                    Case::Planned => "wait-for-restart-window, then set-identity",
                    Case::PlannedRandom => "set-identity at a random moment",
                    _ => "set-identity half a slot into the identity's leader window",
                },
                args.slot_ms, "etcd", "round", "cmd->first vote ms", "cmd->primary exit", "cmd->landed ms", "identity-led", "leader skipped", "missed vote slots", "audit"
            ),
            _ => println!(
                "unplanned failover ({}), watchtower defaults, {} ms slots\n{:<10} {:>5} {:>16} {:>18} {:>14} {:>16} {:>14} {:>8}",
                match case {
                    Case::Kill => "SIGKILL",
                    Case::Stop => "SIGSTOP, then SIGCONT",
                    Case::Cutoff => "cut off but answering: the primary's UDP port cut both ways, its RPC answering; healed after the takeover",
                    _ => "SIGKILL a quarter slot before the identity's leader window",
                },
                args.slot_ms,
                "etcd", "round", "fault->decision", "fault->first vote", "identity-led",
                if *case == Case::Cutoff { "heal->exit ms" } else { "resume->exit ms" },
                if *case == Case::Cutoff { "votes after" } else { "votes resumed" },
                "audit"
            ),
        }
        if !case.planned() {
            println!(
                "{:>60}",
                "(each row continues: fault->landed ms, leader slots skipped, watchtower reason)"
            );
        }
        for &members in &args.members {
            for round in 0..args.rounds {
                let r = match one_round(&bin, members, *case, args.slot_ms) {
                    Ok(r) => r,
                    Err(e) => {
                        println!("{members} member {round:>5}  FAILED: {e:#}");
                        continue;
                    }
                };
                let audit = if r.violations == 0 {
                    "clean".to_string()
                } else {
                    format!("{} VIOLATIONS", r.violations)
                };
                let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
                let etcd = format!("{members} member");
                sent.push(r.first_vote_ms);
                landed.extend(r.landed_ms);
                skipped.push(r.leader_skipped);
                missed.push(r.missed as u64);
                decided.extend(r.decision_ms);
                match case {
                    c if c.planned() => println!(
                        "{etcd:<10} {round:>5} {:>20} {:>20} {:>18} {:>14} {:>14} {:>18} {audit:>8}",
                        r.first_vote_ms,
                        opt(r.exit_ms),
                        opt(r.landed_ms),
                        r.identity_led,
                        r.leader_skipped,
                        r.missed,
                    ),
                    _ => println!(
                        "{etcd:<10} {round:>5} {:>16} {:>18} {:>14} {:>16} {:>14} {audit:>8} {:>8} {:>4} {}",
                        opt(r.decision_ms),
                        r.first_vote_ms,
                        r.identity_led,
                        opt(r.exit_ms),
                        opt(r.votes_after_resume),
                        opt(r.landed_ms),
                        r.leader_skipped,
                        r.reason.as_deref().unwrap_or("-"),
                    ),
                }
            }
        }
        println!(
            "{case:?}: {} rounds; first vote sent ms p50/p99/max {}; landed ms {}; leader slots skipped {}; missed vote slots {}; watchtower decision ms {}",
            sent.len(),
            dist(&mut sent),
            dist(&mut landed),
            dist(&mut skipped),
            dist(&mut missed),
            dist(&mut decided)
        );
    }
    Ok(())
}

/// The pair and the watchtower at its defaults, untouched: failovers ordered (must be 0)
/// and the primary's votes (to show it ran).
fn healthy_run(
    bin: &Path,
    members: usize,
    slot_ms: u64,
    secs: u64,
) -> anyhow::Result<(usize, usize)> {
    let dir = tempfile::tempdir()?;
    let cdir = dir.path().join("c");
    let mut launcher = start_cluster(bin, &cdir, members, slot_ms, secs + 120)?;
    let mut watchtower = None;
    let result = (|| {
        let m = wait_running(&cdir.join("cluster.json"))?;
        let genesis: Genesis = serde_json::from_slice(&std::fs::read(&m.genesis)?)?;
        let s = Setup { m, genesis };
        let primary = s.node(Role::Primary)?;
        let id = primary.identity.to_string();
        wait(Duration::from_secs(60), || {
            (votes_of(primary, &id).len() >= 20).then_some(())
        })
        .context("the primary did not vote")?;
        let (child, _, audit_log) = start_watchtower(bin, &cdir, &s)?;
        watchtower = Some(child);
        std::thread::sleep(Duration::from_secs(secs));
        let failovers = std::fs::read_to_string(&audit_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"result\":\"ok\""))
            .count();
        Ok((failovers, votes_of(primary, &id).len()))
    })();
    if let Some(mut w) = watchtower {
        stop(&mut w);
    }
    stop(&mut launcher);
    result
}

fn start_cluster(
    bin: &Path,
    cdir: &Path,
    members: usize,
    slot_ms: u64,
    secs: u64,
) -> anyhow::Result<Child> {
    Command::new(bin.join("huione-local-cluster"))
        .args(["--validators", "3", "--etcd", "--failover-pair"])
        .args(["--slot-ms", &slot_ms.to_string()])
        .args(["--etcd-members", &members.to_string()])
        .args(["--run-for-secs", &secs.to_string(), "--dir"])
        .arg(cdir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(track)
        .context("huione-local-cluster next to this binary")
}

#[derive(Default)]
struct RoundResult {
    first_vote_ms: u64,
    decision_ms: Option<u64>,
    exit_ms: Option<u64>,
    missed: usize,
    identity_led: u64,
    votes_after_resume: Option<u64>,
    violations: usize,
    landed_ms: Option<u64>,
    leader_skipped: u64,
    /// The watchtower's reason for its failover (unplanned cases).
    reason: Option<String>,
}

fn one_round(bin: &Path, members: usize, case: Case, slot_ms: u64) -> anyhow::Result<RoundResult> {
    let dir = tempfile::tempdir()?;
    let cdir = dir.path().join("c");
    let mut launcher = start_cluster(bin, &cdir, members, slot_ms, 180)?;
    let mut watchtower = None;
    let result = measure(bin, &cdir, case, &mut watchtower);
    if let Some(mut w) = watchtower {
        stop(&mut w);
    }
    stop(&mut launcher);
    result
}

/// The cluster's nodes and genesis, once it runs.
struct Setup {
    m: ClusterManifest,
    genesis: Genesis,
}

impl Setup {
    fn node(&self, role: Role) -> anyhow::Result<&NodeEntry> {
        self.m
            .nodes
            .iter()
            .find(|n| n.role == role)
            .with_context(|| format!("no {role:?} in the manifest"))
    }
}

fn measure(
    bin: &Path,
    cdir: &Path,
    case: Case,
    watchtower: &mut Option<Child>,
) -> anyhow::Result<RoundResult> {
    let m = wait_running(&cdir.join("cluster.json"))?;
    let genesis: Genesis = serde_json::from_slice(&std::fs::read(&m.genesis)?)?;
    let s = Setup { m, genesis };
    let primary = s.node(Role::Primary)?;
    let secondary = s.node(Role::Secondary)?;
    let id = primary.identity.to_string();
    // Let the cluster settle and the primary vote for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    while votes_of(primary, &id).len() < 20 {
        if Instant::now() > deadline {
            bail!("the primary did not vote");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut r = RoundResult::default();
    let pid = primary.pid.context("the primary has no pid")? as i32;
    // The cut of the `cutoff` case; dropping it (also on an early return) heals.
    let mut cut: Option<UdpCut> = None;
    let t0 = match case {
        c if c.planned() => {
            match c {
                Case::PlannedRandom => {
                    let jitter = now_ms() % (4 * s.genesis.slot_duration_ms * 4);
                    std::thread::sleep(Duration::from_millis(jitter));
                }
                Case::PlannedWindow => {
                    sleep_until_before_leader_window(&s, &id)?;
                    let half_in = s.genesis.slot_duration_ms / 4 + s.genesis.slot_duration_ms / 2;
                    std::thread::sleep(Duration::from_millis(half_in));
                }
                _ => wait_for_restart_window(bin, secondary, primary)?,
            }
            let t0 = now_ms();
            let out = Command::new(bin.join("huione-validator"))
                .arg("--ledger")
                .arg(&secondary.ledger)
                .arg("set-identity")
                .arg(&primary.identity_keypair)
                .output()?;
            if !out.status.success() {
                bail!(
                    "set-identity failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            r.exit_ms = wait_gone(pid as u32, Duration::from_secs(10)).map(|t| t - t0);
            t0
        }
        _ => {
            let (child, metrics_port, audit_log) = start_watchtower(bin, cdir, &s)?;
            *watchtower = Some(child);
            let armed = wait(Duration::from_secs(60), || {
                http_get(metrics_port, "/metrics")
                    .is_some_and(|t| t.lines().any(|l| l == "huione_watchtower_armed 1"))
                    .then_some(())
            });
            armed.context("the watchtower did not arm within 60 s")?;
            if case == Case::KillLeader {
                sleep_until_before_leader_window(&s, &id)?;
            }
            // Taken before the fault: the time the cut takes to apply counts against us.
            let t_fault = now_ms();
            if case == Case::Cutoff {
                cut = Some(UdpCut::new(primary.gossip_port)?);
            } else {
                let sig = if case == Case::Stop {
                    libc::SIGSTOP
                } else {
                    libc::SIGKILL
                };
                // SAFETY: kill(2) on the primary validator this bench's cluster started.
                unsafe { libc::kill(pid, sig) };
            }
            let decided = wait(Duration::from_secs(20), || {
                let ok = std::fs::read_to_string(&audit_log)
                    .ok()?
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|v| v["result"] == "ok")?;
                Some((
                    ok["time_ms"].as_u64()?,
                    ok["reason"].as_str().map(String::from),
                ))
            });
            if let Some((t, reason)) = decided {
                r.decision_ms = Some(t.saturating_sub(t_fault));
                r.reason = reason;
            }
            t_fault
        }
    };
    let first = wait(Duration::from_secs(20), || {
        audit(&secondary.ledger)
            .iter()
            .filter_map(|r| match r {
                AuditRecord::Vote(v) if v.node.to_string() == id && v.time_ms >= t0 => {
                    Some((v.time_ms, v.slot))
                }
                _ => None,
            })
            .min()
    })
    .with_context(|| format!("the secondary never voted as the primary{}", keep(cdir)))?;
    r.first_vote_ms = first.0 - t0;
    let mut schedule = ScheduleCache::default();
    r.identity_led = (s.genesis.slot_at(t0)..=first.1)
        .filter(|slot| schedule.leader_at(&s.genesis, *slot) == primary.identity)
        .count() as u64;
    // Landed: the witness sees the account's last vote at or past the first new vote.
    let witness = s.m.nodes.first().context("no nodes")?;
    let vote_account = primary_vote_account(&s)?;
    let landed = wait(Duration::from_secs(20), || {
        let last = last_vote(&witness.rpc_url, &vote_account)?;
        (last >= first.1).then(now_ms)
    });
    r.landed_ms = landed.map(|t| t.saturating_sub(t0));
    if case == Case::Stop {
        std::thread::sleep(Duration::from_millis(500));
        let t_cont = now_ms();
        // SAFETY: as above; resumes the process we stopped.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        r.exit_ms = wait_gone(pid as u32, Duration::from_secs(10)).map(|t| t - t_cont);
        r.votes_after_resume = Some(
            audit(&primary.ledger)
                .iter()
                .filter(|rec| matches!(rec, AuditRecord::Vote(v) if v.time_ms >= t0))
                .count() as u64,
        );
    }
    if let Some(mut cut) = cut.take() {
        // Cut off a little longer, then heal: the old primary hears the cluster again and
        // must stop without voting (the standby holds the lock since before its first vote).
        std::thread::sleep(Duration::from_millis(500));
        let t_heal = now_ms();
        cut.heal()?;
        r.exit_ms = wait_gone(pid as u32, Duration::from_secs(10)).map(|t| t - t_heal);
        r.votes_after_resume = Some(
            audit(&primary.ledger)
                .iter()
                .filter(|rec| matches!(rec, AuditRecord::Vote(v) if v.time_ms >= first.0))
                .count() as u64,
        );
    }
    std::thread::sleep(Duration::from_secs(4));
    // Missed: slots the witness voted on in [t0 - 4 s, t0 + 4 s] that neither machine did.
    let witness = s.m.nodes.first().context("no nodes")?;
    let window = s.genesis.slot_at(t0.saturating_sub(4000))..=s.genesis.slot_at(t0 + 4000);
    let mut ours: BTreeSet<u64> = votes_of(primary, &id);
    ours.extend(votes_of(secondary, &id));
    r.missed = votes_of(witness, &witness.identity.to_string())
        .iter()
        .filter(|slot| window.contains(slot) && !ours.contains(slot))
        .count();
    let mut records = Vec::new();
    // Leader slots skipped: the identity's slots from the fault to 12 slots after the
    // first landed vote that neither machine produced (a slot still ahead of the clock is
    // not counted). A block the cut-off primary produced during the cut reached nobody.
    let end = s
        .genesis
        .slot_at(landed.unwrap_or(first.0) + 12 * s.genesis.slot_duration_ms)
        .min(s.genesis.slot_at(now_ms()).saturating_sub(1));
    let mut produced = BTreeSet::new();
    for n in &s.m.nodes {
        let recs = audit(&n.ledger);
        let unseen_after = (case == Case::Cutoff && n.role == Role::Primary).then_some(t0);
        produced.extend(recs.iter().filter_map(|r| match r {
            AuditRecord::Block(b)
                if b.leader.to_string() == id && unseen_after.is_none_or(|t| b.time_ms < t) =>
            {
                Some(b.slot)
            }
            _ => None,
        }));
        records.extend(recs);
    }
    r.leader_skipped = (s.genesis.slot_at(t0)..=end)
        .filter(|slot| {
            schedule.leader_at(&s.genesis, *slot) == primary.identity && !produced.contains(slot)
        })
        .count() as u64;
    r.violations = Auditor::audit_all(s.genesis.hash, &records)
        .violations()
        .len();
    Ok(r)
}

/// As the operator guide says: wait until the identity has no leader slot soon.
fn wait_for_restart_window(
    bin: &Path,
    secondary: &NodeEntry,
    primary: &NodeEntry,
) -> anyhow::Result<()> {
    let waited = Command::new(bin.join("huione-validator"))
        .arg("--ledger")
        .arg(&secondary.ledger)
        .arg("wait-for-restart-window")
        .arg("--identity")
        .arg(&primary.identity_keypair)
        .args(["--timeout", "60"])
        .stdout(Stdio::null())
        .output()?;
    if !waited.status.success() {
        bail!(
            "wait-for-restart-window failed: {}",
            String::from_utf8_lossy(&waited.stderr)
        );
    }
    Ok(())
}

/// The vote account of the pair's identity, from the genesis.
fn primary_vote_account(s: &Setup) -> anyhow::Result<String> {
    let id = s.node(Role::Primary)?.identity;
    s.genesis
        .validators
        .iter()
        .find(|v| v.identity == id)
        .map(|v| v.vote_account.to_string())
        .context("the primary's identity is not in the genesis")
}

/// `lastVote` of `vote_account` as the node at `rpc_url` sees it.
fn last_vote(rpc_url: &str, vote_account: &str) -> Option<u64> {
    let port: u16 = rpc_url
        .rsplit(':')
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()?;
    let accounts = huione_bench::rpc(port, "getVoteAccounts", serde_json::json!([]))?;
    ["current", "delinquent"].iter().find_map(|k| {
        accounts[k]
            .as_array()?
            .iter()
            .find(|a| a["votePubkey"] == vote_account)?["lastVote"]
            .as_u64()
    })
}

/// `huione-watchtower` with its default thresholds, next to the secondary.
fn start_watchtower(bin: &Path, cdir: &Path, s: &Setup) -> anyhow::Result<(Child, u16, PathBuf)> {
    let primary = s.node(Role::Primary)?;
    let secondary = s.node(Role::Secondary)?;
    let witness = s.m.nodes.first().context("no nodes")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let audit_log = cdir.join("watchtower-audit.jsonl");
    let child = Command::new(bin.join("huione-watchtower"))
        .arg("--standby-ledger")
        .arg(&secondary.ledger)
        .args(["--standby-rpc", &secondary.rpc_url])
        .args(["--primary-rpc", &primary.rpc_url])
        .arg("--primary-identity")
        .arg(&primary.identity_keypair)
        .args(["--cluster-rpc", &witness.rpc_url])
        .args(["--metrics-port", &port.to_string()])
        .arg("--audit-log")
        .arg(&audit_log)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(cdir.join("watchtower.log"))?)
        .spawn()
        .map(track)
        .context("huione-watchtower next to this binary")?;
    Ok((child, port, audit_log))
}

/// Sleeps until just before the identity's next leader window (at least 2 slots ahead).
fn sleep_until_before_leader_window(s: &Setup, id: &str) -> anyhow::Result<()> {
    let g = &s.genesis;
    let mut schedule = ScheduleCache::default();
    let now = g.slot_at(now_ms());
    let start = (now + 2..now + 400)
        .find(|slot| {
            schedule.leader_at(g, *slot).to_string() == id
                && schedule.leader_at(g, slot - 1).to_string() != id
        })
        .context("the identity leads no window within 400 slots")?;
    // Late in the slot before the window: the primary has most likely voted on that
    // slot's block already, so the next block to vote on is the one after the window.
    let at = g.slot_start_ms(start) - g.slot_duration_ms / 4;
    std::thread::sleep(Duration::from_millis(at.saturating_sub(now_ms())));
    Ok(())
}

/// Copies the cluster directory out of the temp dir (for a failed round).
fn keep(cdir: &Path) -> String {
    let to = std::env::temp_dir().join(format!("failover-bench-{}", now_ms()));
    match Command::new("cp").arg("-a").arg(cdir).arg(&to).status() {
        Ok(s) if s.success() => format!(" (copied to {})", to.display()),
        _ => String::new(),
    }
}

fn votes_of(n: &NodeEntry, node: &str) -> BTreeSet<u64> {
    audit(&n.ledger)
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Vote(v) if v.node.to_string() == node => Some(v.slot),
            _ => None,
        })
        .collect()
}

fn audit(ledger: &Path) -> Vec<AuditRecord> {
    std::fs::File::open(ledger.join("audit.jsonl"))
        .ok()
        .and_then(|f| Auditor::read_json_lines(std::io::BufReader::new(f)).ok())
        .unwrap_or_default()
}

fn wait<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The time (ms since the epoch) at which `pid` was seen gone or a zombie.
fn wait_gone(pid: u32, timeout: Duration) -> Option<u64> {
    wait(timeout, || {
        (!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid)).then(now_ms)
    })
}

fn wait_running(path: &Path) -> anyhow::Result<ClusterManifest> {
    for _ in 0..240 {
        if let Ok(m) = ClusterManifest::read(path) {
            if format!("{:?}", m.state).eq_ignore_ascii_case("running") {
                return Ok(m);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("the cluster did not start ({})", path.display())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The clusters and watchtowers running now, stopped by [`remove_cut_on_signal`] too.
static CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn track(child: Child) -> Child {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child.id());
    child
}

fn stop(child: &mut Child) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&pid| pid != child.id());
}

/// The prefix of the nftables table a `cutoff` round adds; the rest is this process's pid.
const CUT_TABLE_PREFIX: &str = "huione_failover_bench_";

/// This process's nftables table.
fn cut_table() -> String {
    format!("{CUT_TABLE_PREFIX}{}", std::process::id())
}

/// Runs `nft ARGS` (with `stdin` as its input if given); its stdout, or an error with its
/// stderr.
fn nft(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "cannot run `nft`: the cutoff case needs nftables (apt-get install -y nftables)",
        )?;
    let mut input = child.stdin.take().context("nft stdin")?;
    input.write_all(stdin.unwrap_or("").as_bytes())?;
    drop(input);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`nft {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `cutoff` fault: one UDP port on loopback cut both ways. An nftables table of this
/// process's own drops, on input, every loopback packet to or from the port: silently (a
/// drop on output would fail the sender's `sendto` with EPERM, which no real partition
/// does), and nothing else is touched (TCP to etcd and RPC passes). Removed by [`heal`],
/// on drop (a failed round, a panic), and on Ctrl-C / SIGTERM ([`remove_cut_on_signal`]).
///
/// [`heal`]: UdpCut::heal
struct UdpCut {
    table: String,
    active: bool,
}

impl UdpCut {
    /// Checks, before any round, that `nft` is there and may change the ruleset (root),
    /// and removes tables a killed run of this bench left behind (their pid is gone).
    fn preflight() -> anyhow::Result<()> {
        let tables = nft(&["list", "tables"], None).context(
            "the cutoff case cuts the primary's UDP port with nftables: run as root with \
             nftables installed (apt-get install -y nftables), or leave `cutoff` out of --cases",
        )?;
        for name in tables.lines().filter_map(|l| l.strip_prefix("table inet ")) {
            let Some(pid) = name.strip_prefix(CUT_TABLE_PREFIX) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
                nft(&["delete", "table", "inet", name], None)?;
                eprintln!("removed {name}, left by a failover-bench run that was killed");
            }
        }
        Ok(())
    }

    fn new(port: u16) -> anyhow::Result<UdpCut> {
        let table = cut_table();
        let script = format!(
            "table inet {table} {{\n\
             \tcomment \"huione failover-bench (pid {pid}): the primary's UDP port {port} cut off\"\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority 0; policy accept;\n\
             \t\tiif \"lo\" udp dport {port} drop comment \"{table}\"\n\
             \t\tiif \"lo\" udp sport {port} drop comment \"{table}\"\n\
             \t}}\n\
             }}\n",
            pid = std::process::id()
        );
        nft(&["-f", "-"], Some(&script))?;
        Ok(UdpCut {
            table,
            active: true,
        })
    }

    /// Removes the table: the port passes again.
    fn heal(&mut self) -> anyhow::Result<()> {
        if self.active {
            nft(&["delete", "table", "inet", &self.table], None)?;
            self.active = false;
        }
        Ok(())
    }
}

impl Drop for UdpCut {
    fn drop(&mut self) {
        if let Err(e) = self.heal() {
            eprintln!(
                "could not remove the cut (remove it with `nft delete table inet {}`): {e:#}",
                self.table
            );
        }
    }
}

/// On Ctrl-C or SIGTERM: removes this process's cut (if `cutoff` runs), stops the cluster
/// and watchtower it started (SIGINT, as between rounds) and exits 130, as the signal
/// would have.
fn remove_cut_on_signal(cutoff: bool) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        if cutoff {
            let table = cut_table();
            let listed = nft(&["list", "tables"], None).unwrap_or_default();
            if listed.lines().any(|l| l == format!("table inet {table}")) {
                match nft(&["delete", "table", "inet", &table], None) {
                    Ok(_) => eprintln!("interrupted: removed the cut ({table})"),
                    Err(e) => eprintln!("interrupted: {e:#}"),
                }
            }
        }
        for pid in CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            // SAFETY: kill(2) on a child this bench started and has not reaped yet.
            unsafe { libc::kill(*pid as i32, libc::SIGINT) };
        }
        std::process::exit(130);
    });
}
