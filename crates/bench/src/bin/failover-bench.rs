//! Planned failover, measured with real processes: a local cluster (3 validators, the
//! last one the primary with its tower in etcd over mTLS, plus a secondary), then
//! `set-identity` on the secondary. Prints, for a 1-member and a 3-member etcd:
//! milliseconds from the command to the first vote by the secondary, from the command to
//! the primary's exit, and the vote slots the identity missed (slots a healthy validator
//! voted on in the failover window that the identity did not).
//!
//! `cargo build --release -p huione-validator -p huione-cluster -p huione-bench &&
//!  target/release/failover-bench [ROUNDS]`

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use huione_cluster::manifest::{ClusterManifest, NodeEntry};
use huione_cluster::plan::Role;
use huione_core::audit::{AuditRecord, Auditor};

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2);
    let bin = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("no exe dir")?;
    println!(
        "{:<10} {:>5} {:>22} {:>20} {:>18} {:>10}",
        "etcd", "round", "cmd->first vote ms", "cmd->primary exit", "missed vote slots", "audit"
    );
    for members in [1usize, 3] {
        for round in 0..rounds {
            let r = one_round(&bin, members)?;
            println!(
                "{:<10} {:>5} {:>22} {:>20} {:>18} {:>10}",
                format!("{members} member"),
                round,
                r.first_vote_ms,
                r.exit_ms.map_or("-".into(), |v| v.to_string()),
                r.missed,
                if r.violations == 0 {
                    "clean".to_string()
                } else {
                    format!("{} VIOLATIONS", r.violations)
                }
            );
        }
    }
    Ok(())
}

struct RoundResult {
    first_vote_ms: u64,
    exit_ms: Option<u64>,
    missed: usize,
    violations: usize,
}

fn one_round(bin: &Path, members: usize) -> anyhow::Result<RoundResult> {
    let dir = tempfile::tempdir()?;
    let cdir = dir.path().join("c");
    let mut launcher = Command::new(bin.join("huione-local-cluster"))
        .args([
            "--validators",
            "3",
            "--etcd",
            "--failover-pair",
            "--slot-ms",
            "400",
        ])
        .args([
            "--etcd-members",
            &members.to_string(),
            "--run-for-secs",
            "120",
            "--dir",
        ])
        .arg(&cdir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("huione-local-cluster next to this binary")?;
    let result = measure(bin, &cdir);
    stop(&mut launcher);
    result
}

fn measure(bin: &Path, cdir: &Path) -> anyhow::Result<RoundResult> {
    let m = wait_running(&cdir.join("cluster.json"))?;
    let node = |role: Role| m.nodes.iter().find(|n| n.role == role).context("role");
    let primary = node(Role::Primary)?;
    let secondary = node(Role::Secondary)?;
    let witness = m.nodes.first().context("no nodes")?;
    // Let the cluster settle and the primary vote for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    while votes_of(primary, &primary.identity.to_string()).len() < 20 {
        if Instant::now() > deadline {
            bail!("the primary did not vote");
        }
        std::thread::sleep(Duration::from_millis(200));
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
    let exit_ms = primary.pid.and_then(|pid| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
                return Some(now_ms() - t0);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    });
    std::thread::sleep(Duration::from_secs(6));
    let id = primary.identity.to_string();
    let first = audit(&secondary.ledger)
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Vote(v) if v.node.to_string() == id && v.time_ms >= t0 => Some(v.time_ms),
            _ => None,
        })
        .min()
        .context("the secondary never voted as the primary")?;
    // Missed: slots the witness voted on in [t0 - 4 s, t0 + 4 s] that neither machine did.
    let slot_of = |t: u64| t.saturating_sub(m.start_time_ms) / m.slot_ms;
    let window = slot_of(t0 - 4000)..=slot_of(t0 + 4000);
    let mut ours: BTreeSet<u64> = votes_of(primary, &id);
    ours.extend(votes_of(secondary, &id));
    let witness_votes = votes_of(witness, &witness.identity.to_string());
    let missed = witness_votes
        .iter()
        .filter(|s| window.contains(s) && !ours.contains(s))
        .count();
    let mut records = Vec::new();
    for n in &m.nodes {
        records.extend(audit(&n.ledger));
    }
    let genesis: huione_core::Genesis = serde_json::from_slice(&std::fs::read(&m.genesis)?)?;
    let violations = Auditor::audit_all(genesis.hash, &records)
        .violations()
        .len();
    Ok(RoundResult {
        first_vote_ms: first - t0,
        exit_ms,
        missed,
        violations,
    })
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
