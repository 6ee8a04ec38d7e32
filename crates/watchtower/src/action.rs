//! Carrying out a failover: the pre-hook, `set-identity` on the standby's admin socket
//! (the same call `huione-validator --ledger <standby> set-identity <keypair>` makes), the
//! audit record, then the post-hook.
//!
//! set-identity is safe whatever state the primary is in: the standby takes the tower
//! lock in storage (a new fencing revision), so the old primary's next tower store fails
//! and it cannot vote again. That is why the watchtower may act on suspicion alone.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use huione_keys::Keypair;
use huione_rpc::{AdminClient, SetIdentityOutcome};
use serde::Serialize;

use crate::decision::FailoverOrder;

/// How to fail over. Plain data, resolved from the flags.
#[derive(Clone, Debug)]
pub struct ActionConfig {
    pub standby_ledger: PathBuf,
    /// The primary identity's keypair (validator-keypair.json).
    pub primary_keypair: Keypair,
    pub primary_keypair_file: PathBuf,
    pub primary_rpc_url: String,
    pub require_tower: bool,
    pub dry_run: bool,
    pub pre_hook: Option<String>,
    pub post_hook: Option<String>,
    /// A failing pre-hook cancels this attempt.
    pub pre_hook_veto: bool,
    pub hook_timeout: Duration,
    pub set_identity_timeout: Duration,
    pub audit_log: PathBuf,
}

/// The result of one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultKind {
    /// The standby took the identity.
    Ok,
    /// set-identity failed (see `error`); the standby is unchanged.
    Error,
    /// --dry-run: nothing was done.
    DryRun,
    /// The pre-hook failed with --pre-hook-veto: nothing was done.
    Vetoed,
}

impl ResultKind {
    pub fn label(&self) -> &'static str {
        match self {
            ResultKind::Ok => "ok",
            ResultKind::Error => "error",
            ResultKind::DryRun => "dry_run",
            ResultKind::Vetoed => "vetoed",
        }
    }

    /// Whether the incident counts as handled (a dry run stands for a failover).
    pub fn handled(&self) -> bool {
        matches!(self, ResultKind::Ok | ResultKind::DryRun)
    }
}

/// One audit line per failover triggered.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    pub event: &'static str,
    /// When the decision was taken (Unix ms).
    pub time_ms: u64,
    pub result: ResultKind,
    pub reason: &'static str,
    pub detail: String,
    /// The decision: its reasons, failing checks, lags and attempt number.
    #[serde(flatten)]
    pub order: FailoverOrder,
    pub dry_run: bool,
    pub primary_identity: String,
    pub primary_rpc: String,
    pub standby_ledger: String,
    pub require_tower: bool,
    /// Time spent in set-identity.
    pub set_identity_ms: Option<u64>,
    pub lock_revision: Option<i64>,
    pub tower_loaded: Option<bool>,
    pub tower_root: Option<u64>,
    pub error: Option<String>,
    pub pre_hook_exit: Option<String>,
}

/// Runs one failover attempt for `order`; `decided_ms` is the Unix time of the decision.
pub async fn carry_out(cfg: &ActionConfig, order: &FailoverOrder, decided_ms: u64) -> AuditEntry {
    let detail = order
        .reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut entry = AuditEntry {
        event: "failover",
        time_ms: decided_ms,
        result: ResultKind::DryRun,
        reason: order.reason(),
        detail,
        order: order.clone(),
        dry_run: cfg.dry_run,
        primary_identity: cfg.primary_keypair.pubkey().to_string(),
        primary_rpc: cfg.primary_rpc_url.clone(),
        standby_ledger: cfg.standby_ledger.display().to_string(),
        require_tower: cfg.require_tower,
        set_identity_ms: None,
        lock_revision: None,
        tower_loaded: None,
        tower_root: None,
        error: None,
        pre_hook_exit: None,
    };
    if let Some(cmd) = &cfg.pre_hook {
        let status = run_hook(cmd, &hook_env(cfg, &entry, "pre"), cfg.hook_timeout).await;
        entry.pre_hook_exit = Some(status.clone());
        if status != "0" && cfg.pre_hook_veto {
            entry.result = ResultKind::Vetoed;
            entry.error = Some(format!(
                "pre-hook {cmd:?} failed ({status}) and --pre-hook-veto is set"
            ));
        }
    }
    if entry.result != ResultKind::Vetoed && !cfg.dry_run {
        let started = Instant::now();
        let r = set_identity(cfg).await;
        entry.set_identity_ms = Some(started.elapsed().as_millis() as u64);
        match r {
            Ok(o) => {
                entry.result = ResultKind::Ok;
                entry.lock_revision = o.lock_revision;
                entry.tower_loaded = Some(o.tower_loaded);
                entry.tower_root = o.tower_root;
            }
            Err(e) => {
                entry.result = ResultKind::Error;
                entry.error = Some(e);
            }
        }
    }
    if let Err(e) = append_audit(&cfg.audit_log, &entry) {
        tracing::error!(file = %cfg.audit_log.display(), error = %e, "cannot append the failover audit record");
    }
    if let Some(cmd) = &cfg.post_hook {
        let status = run_hook(cmd, &hook_env(cfg, &entry, "post"), cfg.hook_timeout).await;
        if status != "0" {
            tracing::warn!(hook = %cmd, status = %status, "post-hook failed");
        }
    }
    entry
}

async fn set_identity(cfg: &ActionConfig) -> Result<SetIdentityOutcome, String> {
    let mut client = AdminClient::connect(&cfg.standby_ledger)
        .await
        .map_err(|e| e.to_string())?
        .with_timeout(cfg.set_identity_timeout);
    client
        .set_identity(&cfg.primary_keypair, cfg.require_tower)
        .await
        .map_err(|e| e.to_string())
}

/// Appends one JSON line and syncs it: the record must survive a crash right after.
pub fn append_audit(path: &Path, entry: &AuditEntry) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(&line)?;
    f.sync_data()
}

/// The environment a hook runs with.
pub fn hook_env(cfg: &ActionConfig, e: &AuditEntry, phase: &str) -> BTreeMap<&'static str, String> {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut env = BTreeMap::new();
    env.insert("HUIONE_FAILOVER_PHASE", phase.to_string());
    env.insert("HUIONE_FAILOVER_REASON", e.reason.to_string());
    env.insert("HUIONE_FAILOVER_DETAIL", e.detail.clone());
    env.insert("HUIONE_FAILOVER_TIME_MS", e.time_ms.to_string());
    env.insert("HUIONE_FAILOVER_ATTEMPT", e.order.attempt.to_string());
    env.insert("HUIONE_FAILING_CHECKS", e.order.failing_checks.to_string());
    env.insert("HUIONE_VOTE_LAG_SLOTS", opt(e.order.vote_lag_slots));
    env.insert("HUIONE_PRIMARY_SLOT", opt(e.order.primary_slot));
    env.insert("HUIONE_STANDBY_SLOT", opt(e.order.standby_slot));
    env.insert("HUIONE_PRIMARY_IDENTITY", e.primary_identity.clone());
    env.insert(
        "HUIONE_PRIMARY_KEYPAIR",
        cfg.primary_keypair_file.display().to_string(),
    );
    env.insert("HUIONE_PRIMARY_RPC", e.primary_rpc.clone());
    env.insert("HUIONE_STANDBY_LEDGER", e.standby_ledger.clone());
    env.insert("HUIONE_DRY_RUN", u8::from(e.dry_run).to_string());
    if phase == "post" {
        env.insert("HUIONE_FAILOVER_RESULT", e.result.label().to_string());
        env.insert("HUIONE_FAILOVER_ERROR", e.error.clone().unwrap_or_default());
        env.insert(
            "HUIONE_LOCK_REVISION",
            e.lock_revision.map(|r| r.to_string()).unwrap_or_default(),
        );
    }
    env
}

/// Runs `sh -c cmd` with `env`, bounded by `timeout` (then killed). Returns "0" on
/// success, else the exit code, signal, "timeout" or the spawn error.
pub async fn run_hook(
    cmd: &str,
    env: &BTreeMap<&'static str, String>,
    timeout: Duration,
) -> String {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return format!("cannot start /bin/sh: {e}"),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) => match st.code() {
            Some(c) => c.to_string(),
            None => format!("killed by signal ({st})"),
        },
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => {
            let _ = child.kill().await;
            "timeout".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Failure;

    fn config(dir: &Path) -> ActionConfig {
        ActionConfig {
            standby_ledger: dir.join("no-such-ledger"),
            primary_keypair: Keypair::from_secret(&[7; 32]),
            primary_keypair_file: dir.join("validator-keypair.json"),
            primary_rpc_url: "http://127.0.0.1:1/".into(),
            require_tower: false,
            dry_run: true,
            pre_hook: None,
            post_hook: None,
            pre_hook_veto: false,
            hook_timeout: Duration::from_secs(5),
            set_identity_timeout: Duration::from_secs(1),
            audit_log: dir.join("audit.jsonl"),
        }
    }

    fn order() -> FailoverOrder {
        FailoverOrder {
            reasons: vec![Failure::PrimaryRpcTimeout],
            failing_checks: 3,
            first_failure_ms: 10,
            vote_lag_slots: Some(2),
            primary_slot: None,
            standby_slot: Some(99),
            attempt: 1,
        }
    }

    fn audit_lines(cfg: &ActionConfig) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&cfg.audit_log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn dry_run_runs_hooks_and_records_but_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        let out = dir.path().join("hooks.txt");
        let hook = format!(
            "echo \"$HUIONE_FAILOVER_PHASE $HUIONE_FAILOVER_REASON $HUIONE_DRY_RUN $HUIONE_FAILOVER_RESULT\" >> {}",
            out.display()
        );
        cfg.pre_hook = Some(hook.clone());
        cfg.post_hook = Some(hook);
        let e = carry_out(&cfg, &order(), 1234).await;
        assert_eq!(e.result, ResultKind::DryRun);
        assert_eq!(e.set_identity_ms, None);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "pre primary_rpc_timeout 1 \npost primary_rpc_timeout 1 dry_run\n"
        );
        let lines = audit_lines(&cfg);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["result"], "dry_run");
        assert_eq!(lines[0]["reason"], "primary_rpc_timeout");
        assert_eq!(lines[0]["vote_lag_slots"], 2);
        assert_eq!(lines[0]["time_ms"], 1234);
    }

    #[tokio::test]
    async fn a_failing_pre_hook_vetoes_only_with_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.pre_hook = Some("exit 7".into());
        assert_eq!(
            carry_out(&cfg, &order(), 1).await.result,
            ResultKind::DryRun
        );
        cfg.pre_hook_veto = true;
        let e = carry_out(&cfg, &order(), 2).await;
        assert_eq!(e.result, ResultKind::Vetoed);
        assert_eq!(e.pre_hook_exit.as_deref(), Some("7"));
        assert_eq!(audit_lines(&cfg).len(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_standby_is_an_error_that_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.dry_run = false;
        let e = carry_out(&cfg, &order(), 1).await;
        assert_eq!(e.result, ResultKind::Error);
        assert!(e.error.unwrap().contains("admin socket"));
    }

    #[tokio::test]
    async fn hooks_are_bounded_in_time() {
        let t = Instant::now();
        let status = run_hook("sleep 5", &BTreeMap::new(), Duration::from_millis(100)).await;
        assert_eq!(status, "timeout");
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
