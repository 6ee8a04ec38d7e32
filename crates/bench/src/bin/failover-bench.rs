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
//!
//! Every round ends with the auditor over every ledger.
//!
//! `cargo build --release -p huione-validator -p huione-cluster -p huione-watchtower \
//!  -p huione-bench && target/release/failover-bench [--rounds N] [--cases planned,kill,stop]`

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

#[derive(Parser)]
struct Args {
    /// Rounds per case and etcd size.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Cases to run (comma separated): planned, kill, stop, kill-leader.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "planned,kill,stop,kill-leader"
    )]
    cases: Vec<Case>,
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
    Kill,
    Stop,
    KillLeader,
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
    for case in &args.cases {
        println!();
        match case {
            Case::Planned => println!(
                "planned failover (wait-for-restart-window, then set-identity), {} ms slots\n{:<10} {:>5} {:>20} {:>20} {:>14} {:>18} {:>8}",
                args.slot_ms, "etcd", "round", "cmd->first vote ms", "cmd->primary exit", "identity-led", "missed vote slots", "audit"
            ),
            _ => println!(
                "unplanned failover ({}), watchtower defaults, {} ms slots\n{:<10} {:>5} {:>16} {:>18} {:>14} {:>16} {:>14} {:>8}",
                match case {
                    Case::Kill => "SIGKILL",
                    Case::Stop => "SIGSTOP, then SIGCONT",
                    _ => "SIGKILL a quarter slot before the identity's leader window",
                },
                args.slot_ms,
                "etcd", "round", "fault->decision", "fault->first vote", "identity-led", "resume->exit ms", "votes resumed", "audit"
            ),
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
                match case {
                    Case::Planned => println!(
                        "{etcd:<10} {round:>5} {:>20} {:>20} {:>14} {:>18} {audit:>8}",
                        r.first_vote_ms,
                        opt(r.exit_ms),
                        r.identity_led,
                        r.missed,
                    ),
                    _ => println!(
                        "{etcd:<10} {round:>5} {:>16} {:>18} {:>14} {:>16} {:>14} {audit:>8}",
                        opt(r.decision_ms),
                        r.first_vote_ms,
                        r.identity_led,
                        opt(r.exit_ms),
                        opt(r.votes_after_resume),
                    ),
                }
            }
        }
    }
    Ok(())
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
}

fn one_round(bin: &Path, members: usize, case: Case, slot_ms: u64) -> anyhow::Result<RoundResult> {
    let dir = tempfile::tempdir()?;
    let cdir = dir.path().join("c");
    let mut launcher = Command::new(bin.join("huione-local-cluster"))
        .args(["--validators", "3", "--etcd", "--failover-pair"])
        .args(["--slot-ms", &slot_ms.to_string()])
        .args(["--etcd-members", &members.to_string()])
        .args(["--run-for-secs", "180", "--dir"])
        .arg(&cdir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("huione-local-cluster next to this binary")?;
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
    let t0 = match case {
        Case::Planned => {
            // As the operator guide says: wait until the identity has no leader slot soon.
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
            let sig = if case == Case::Stop {
                libc::SIGSTOP
            } else {
                libc::SIGKILL
            };
            let t_fault = now_ms();
            // SAFETY: kill(2) on the primary validator this bench's cluster started.
            unsafe { libc::kill(pid, sig) };
            let decided = wait(Duration::from_secs(20), || {
                std::fs::read_to_string(&audit_log)
                    .ok()?
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|v| v["result"] == "ok")?["time_ms"]
                    .as_u64()
            });
            r.decision_ms = decided.map(|t| t.saturating_sub(t_fault));
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
    for n in &s.m.nodes {
        records.extend(audit(&n.ledger));
    }
    r.violations = Auditor::audit_all(s.genesis.hash, &records)
        .violations()
        .len();
    Ok(r)
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

fn stop(child: &mut Child) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
