//! Helpers for the fault and race failover tests (`failover_faults.rs`,
//! `failover_races.rs`): etcd flags, a primary/standby pair, `set-identity`, metrics, the
//! tower lock as seen from outside, and the final audit.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet};

use huione_core::audit::{AuditRecord, Auditor, VoteRecord};
use huione_core::ScheduleCache;
use huione_keys::Pubkey;
use huione_testkit::EtcdCluster;
use huione_tower_storage::{
    EtcdConfig, EtcdTowerStorage, Lease, LockOwner, LockRecord, TowerStorage,
};
use serde_json::json;

use crate::common::*;

/// The validator index whose vote account the primary/standby pair runs.
pub const PAIR: usize = 2;
/// Slot length of these tests (ms). Real processes on a shared 2-core machine: not less.
pub const SLOT_MS: u64 = 100;

/// Real-process tests are CPU-sensitive: run one at a time within a test binary.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A 3-validator cluster whose validator [`PAIR`] is run by a primary with its tower in
/// etcd (`c.nodes[PAIR]`, named "primary", `extra` appended to its flags), plus a standby
/// spec (own identity, `--no-check-vote-account`, `--authorized-voter` the primary's key).
/// Nothing is started.
pub fn pair_cluster(etcd: &EtcdCluster, extra: &[&str]) -> (Cluster, Node) {
    let mut c = Cluster::new(BIN, 3, SLOT_MS);
    let mut flags = etcd.validator_flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let entry = c.nodes[0].gossip_port;
    let primary = c.node_spec("primary", PAIR, Some(entry), &flags);
    c.nodes[PAIR] = primary;
    let standby = c.standby_spec("secondary", PAIR, &etcd.validator_flags(), true);
    (c, standby)
}

pub fn vote_account(c: &Cluster) -> String {
    c.keys[PAIR].1.pubkey().to_string()
}

pub fn primary_identity(c: &Cluster) -> Pubkey {
    c.keys[PAIR].0.pubkey()
}

pub fn identity_of(node: &Node) -> Option<String> {
    node.rpc("getIdentity", json!([]))?["result"]["identity"]
        .as_str()
        .map(str::to_string)
}

/// `lastVote` of `vote_account` as `node` sees it (`getVoteAccounts`).
pub fn last_vote_of(node: &Node, vote_account: &str) -> Option<u64> {
    let va = node.rpc("getVoteAccounts", json!([]))?;
    let all: Vec<serde_json::Value> = ["current", "delinquent"]
        .iter()
        .filter_map(|k| va["result"][k].as_array().cloned())
        .flatten()
        .collect();
    all.iter().find(|a| a["votePubkey"] == vote_account)?["lastVote"].as_u64()
}

/// Waits until the vote account's last vote, as `observer` sees it, passes `slot`.
pub fn wait_vote_past(
    observer: &Node,
    vote_account: &str,
    slot: u64,
    timeout: Duration,
) -> Option<u64> {
    wait_for(timeout, || {
        last_vote_of(observer, vote_account).filter(|v| *v > slot)
    })
}

/// Waits until the cluster roots past slot 20 and the pair's vote account voted past 20.
pub fn wait_voting(c: &Cluster, timeout: Duration) {
    let vote = vote_account(c);
    let ok = wait_for(timeout, || {
        let r = c.nodes[0].slot("finalized")?;
        let lv = last_vote_of(&c.nodes[0], &vote)?;
        (r >= 20 && lv >= 20).then_some(())
    });
    assert!(ok.is_some(), "the primary did not vote:\n{}", c.logs());
}

/// `huione-validator --ledger LEDGER set-identity [--require-tower] KEYPAIR`.
pub fn set_identity_cmd(ledger: &Path, keypair: &Path, require_tower: bool) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--ledger", ledger.to_str().unwrap(), "set-identity"]);
    if require_tower {
        cmd.arg("--require-tower");
    }
    cmd.arg(keypair);
    cmd
}

pub fn set_identity(ledger: &Path, keypair: &Path, require_tower: bool) -> Output {
    set_identity_cmd(ledger, keypair, require_tower)
        .output()
        .unwrap()
}

/// Starts `set-identity` without waiting for it.
pub fn spawn_set_identity(ledger: &Path, keypair: &Path) -> Child {
    set_identity_cmd(ledger, keypair, false)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn out_text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A Prometheus sample without labels from the node's `/metrics`.
pub fn metric(node: &Node, name: &str) -> Option<f64> {
    let body = http_get(node.rpc_port, "/metrics")?;
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}

/// One RPC call and how long it took.
pub fn timed_rpc(node: &Node, method: &str) -> (Option<serde_json::Value>, Duration) {
    let t = Instant::now();
    let r = node.rpc(method, json!([]));
    (r, t.elapsed())
}

/// The tower lock of `identity` as seen from outside (the test process is a third etcd
/// client, like a monitor or an operator with a second validator).
pub struct Outsider {
    rt: tokio::runtime::Runtime,
    storage: EtcdTowerStorage,
}

impl Outsider {
    pub fn connect(etcd: &EtcdCluster) -> Outsider {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tls = etcd.tls();
        let cfg = EtcdConfig::new(
            etcd.client_endpoints(),
            tls.ca_file,
            tls.cert_file,
            tls.key_file,
        );
        let storage = rt.block_on(EtcdTowerStorage::connect(cfg)).unwrap();
        Outsider { rt, storage }
    }

    pub fn holder(&self, id: &Pubkey) -> Option<LockRecord> {
        self.rt.block_on(self.storage.lock_holder(id)).unwrap()
    }

    pub fn has_tower(&self, id: &Pubkey) -> bool {
        self.rt.block_on(self.storage.load(id)).unwrap().is_some()
    }

    /// The last vote slot of `id`'s stored (and verified) tower.
    pub fn last_vote(&self, id: &Pubkey) -> Option<u64> {
        self.rt
            .block_on(self.storage.load_verified(id))
            .unwrap()
            .and_then(|t| t.last_voted_slot())
    }

    /// Takes the lock (as a third process would).
    pub fn acquire(&self, id: &Pubkey, reason: &str) -> Lease {
        self.rt
            .block_on(
                self.storage
                    .acquire(id, LockOwner::for_this_process(*id, reason)),
            )
            .unwrap()
    }

    pub fn history(&self, id: &Pubkey) -> Vec<LockRecord> {
        self.rt.block_on(self.storage.history(id)).unwrap()
    }
}

/// Every record in the ledgers' audit logs. A missing or torn log fails the test (every
/// ledger given ran a validator, which opens its log at start): it is never read as
/// "no records".
pub fn audit_records(ledgers: &[&Path]) -> Vec<AuditRecord> {
    ledgers.iter().flat_map(|l| read_audit_log(l)).collect()
}

/// The records of a ledger's audit log (rotated segments, then `audit.jsonl`); panics
/// naming the file if it is missing or torn.
pub fn read_audit_log(ledger: &Path) -> Vec<AuditRecord> {
    huione_validator::ledger::audit_log::read_records(ledger)
        .unwrap_or_else(|e| panic!("audit log of {}: {e}", ledger.display()))
}

/// The votes recorded in one ledger.
pub fn votes_in(ledger: &Path) -> Vec<VoteRecord> {
    audit_records(&[ledger])
        .into_iter()
        .filter_map(|r| match r {
            AuditRecord::Vote(v) => Some(v),
            _ => None,
        })
        .collect()
}

/// Every ledger directory of the cluster and of `more`.
pub fn ledgers(c: &Cluster, more: &[&Node]) -> Vec<PathBuf> {
    c.nodes
        .iter()
        .chain(more.iter().copied())
        .map(|n| n.ledger.clone())
        .collect()
}

/// Runs the auditor over every ledger; panics on any violation. Returns the records.
pub fn assert_audit_clean(c: &Cluster, more: &[&Node]) -> Vec<AuditRecord> {
    let ls = ledgers(c, more);
    let refs: Vec<&Path> = ls.iter().map(|p| p.as_path()).collect();
    let records = audit_records(&refs);
    let auditor = Auditor::audit_all(c.genesis.hash, &records);
    assert!(
        auditor.violations().is_empty(),
        "safety violations: {:#?}",
        auditor.violations()
    );
    // Every ledger is here, so every voted block's ancestry is too: a vote that could not
    // be lockout-checked means the audit proved less than it claims.
    assert_eq!(
        auditor.unresolved_votes, 0,
        "{} votes could not be lockout-checked (ancestry missing from the logs)",
        auditor.unresolved_votes
    );
    let votes = records
        .iter()
        .filter(|r| matches!(r, AuditRecord::Vote(_)))
        .count();
    let blocks = records.len() - votes;
    eprintln!("audit: {votes} votes, {blocks} blocks, no violation");
    assert!(votes > 30, "too few votes audited: {votes}");
    records
}

/// Votes for the pair's vote account recorded at or after `t_ms` (any ledger).
pub fn pair_votes_since(records: &[AuditRecord], vote_account: &str, t_ms: u64) -> Vec<VoteRecord> {
    let mut v: Vec<VoteRecord> = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Vote(v)
                if v.vote_account.to_string() == vote_account && v.time_ms >= t_ms =>
            {
                Some(v.clone())
            }
            _ => None,
        })
        .collect();
    v.sort_by_key(|v| v.time_ms);
    v
}

/// A small deterministic generator (seed printed by the tests that use it).
pub struct Rng(u64);

impl Rng {
    pub fn from_env_or_time() -> Rng {
        let seed = std::env::var("HUIONE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(now_ms);
        eprintln!("seed {seed} (HUIONE_TEST_SEED={seed} to repeat)");
        Rng(seed)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Slots at which the pair's identity starts a leader window, at least `ahead` slots from
/// now.
pub fn next_window(c: &Cluster, ahead: u64) -> u64 {
    let g = &c.genesis;
    let id = primary_identity(c);
    let mut schedule = ScheduleCache::default();
    let now = g.slot_at(now_ms());
    (now + ahead..now + 400)
        .find(|s| schedule.leader_at(g, *s) == id && schedule.leader_at(g, s - 1) != id)
        .expect("the identity leads a window within 400 slots")
}

/// Blocks of `leader` per slot: slot → set of instances that produced one.
pub fn producers(records: &[AuditRecord], leader: &str) -> BTreeMap<u64, BTreeSet<String>> {
    let mut by_slot: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for r in records {
        if let AuditRecord::Block(b) = r {
            if b.leader.to_string() == leader {
                by_slot
                    .entry(b.slot)
                    .or_default()
                    .insert(b.instance.clone());
            }
        }
    }
    by_slot
}

/// Waits (up to 60 s) until `standby` has produced a block of `identity` in one of its
/// leader windows after the current one; fails the test if it never does.
pub fn wait_standby_leads_a_later_window(c: &Cluster, standby: &Node, identity: &str) {
    let later = next_window(c, 1);
    let led = wait_for(Duration::from_secs(60), || {
        let recs = audit_records(&[standby.ledger.as_path()]);
        producers(&recs, identity)
            .keys()
            .any(|s| *s >= later)
            .then_some(())
    });
    assert!(
        led.is_some(),
        "the standby never led a window of the identity from slot {later}:\n{}",
        standby.log()
    );
}
