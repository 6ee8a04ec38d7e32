//! Test harness: real huione-validator processes on loopback, in a temp dir
//! (`huione_testkit::nodes`), run from the binary [`validator_bin`] builds or finds.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use huione_core::audit::{AuditRecord, Auditor, VoteRecord};
pub use huione_testkit::nodes::*;
use serde_json::Value;

/// The `huione-validator` binary: `$HUIONE_VALIDATOR_BIN`, else built (once per test
/// process) with the cargo that runs the tests, so it is never stale.
pub fn validator_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HUIONE_VALIDATOR_BIN") {
            return PathBuf::from(p);
        }
        let args = ["-q", "-p", "huione-validator", "--bin", "huione-validator"];
        huione_testkit::cargo_build(env!("CARGO_MANIFEST_DIR"), &args)
            .unwrap_or_else(|e| panic!("{e}"));
        let exe = std::env::current_exe().expect("current exe");
        // The test binary lives in target/<profile>/deps/.
        exe.parent()
            .and_then(Path::parent)
            .map(|d| d.join("huione-validator"))
            .expect("target dir")
    })
    .clone()
}

/// A `huione-watchtower` a test started (killed on drop): its metrics port, audit log
/// and log file.
pub struct Watchtower {
    pub child: Child,
    pub metrics_port: u16,
    pub audit_log: PathBuf,
    pub log: PathBuf,
}

impl Drop for Watchtower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watchtower {
    /// Starts `huione-watchtower` for the standby whose ledger is `standby_ledger`, with
    /// the RPC URLs `[standby, primary, cluster]`, its metrics on a free port, its audit
    /// log and log in `dir`, then `extra`.
    pub fn start(
        dir: &Path,
        standby_ledger: &Path,
        primary_identity: &Path,
        [standby_rpc, primary_rpc, cluster_rpc]: [String; 3],
        extra: &[String],
    ) -> Watchtower {
        let metrics_port = free_port();
        let audit_log = dir.join("watchtower-audit.jsonl");
        let log = dir.join("watchtower.log");
        let child = Command::new(env!("CARGO_BIN_EXE_huione-watchtower"))
            .arg("--standby-ledger")
            .arg(standby_ledger)
            .args(["--standby-rpc", &standby_rpc])
            .args(["--primary-rpc", &primary_rpc])
            .arg("--primary-identity")
            .arg(primary_identity)
            .args(["--cluster-rpc", &cluster_rpc])
            .args(["--metrics-port", &metrics_port.to_string()])
            .arg("--audit-log")
            .arg(&audit_log)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Watchtower {
            child,
            metrics_port,
            audit_log,
            log,
        }
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").unwrap_or_default()
    }
    /// `huione_watchtower_armed 1` (the exact sample line: the HELP text starts the same).
    pub fn armed(&self) -> bool {
        self.metrics()
            .lines()
            .any(|l| l == "huione_watchtower_armed 1")
    }
    pub fn log(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 60)
    }
    /// The failover audit records written so far.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The votes and blocks one validator recorded (`<ledger>/audit.jsonl`). A missing or
/// torn log fails the test: it is never read as "no records".
pub fn audit_records(ledger: &Path) -> Vec<AuditRecord> {
    let path = ledger.join("audit.jsonl");
    audit_records_so_far(ledger)
        .unwrap_or_else(|| panic!("no audit log {}: did the validator start?", path.display()))
}

/// While a validator may still be starting: None until it has opened its audit log;
/// a torn log still fails the test.
pub fn audit_records_so_far(ledger: &Path) -> Option<Vec<AuditRecord>> {
    let path = ledger.join("audit.jsonl");
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot open the audit log {}: {e}", path.display()),
    };
    let records = Auditor::read_json_lines(std::io::BufReader::new(f))
        .unwrap_or_else(|e| panic!("the audit log {} is torn or corrupt: {e}", path.display()));
    Some(records)
}

/// Votes sent by `node` at or after `since_ms`, oldest first.
pub fn votes_by(records: &[AuditRecord], node: &str, since_ms: u64) -> Vec<VoteRecord> {
    let mut v: Vec<VoteRecord> = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Vote(v) if v.node.to_string() == node && v.time_ms >= since_ms => {
                Some(v.clone())
            }
            _ => None,
        })
        .collect();
    v.sort_by_key(|v| v.time_ms);
    v
}
