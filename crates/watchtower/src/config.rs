//! Flags, parsed into plain data ([`Args`]) first, then resolved and checked into a
//! [`Config`] (keypair read, URLs parsed, limits checked) in a separate step.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use huione_keys::{Keypair, Pubkey};

use crate::action::ActionConfig;
use crate::decision::Settings;
use crate::observe::Targets;
use huione_rpc::client::Endpoint;

/// The shortest `--max-peer-silence-ms` accepted: a little more than gossip's push interval.
pub const MIN_PEER_SILENCE_MS: u64 = 600;

/// `--check-interval-ms` by default (the simulator's watchtower uses it too).
pub const DEFAULT_CHECK_INTERVAL_MS: u64 = 100;
/// `--rpc-timeout-ms` by default.
pub const DEFAULT_RPC_TIMEOUT_MS: u64 = 250;
/// `--set-identity-timeout-ms` by default.
pub const DEFAULT_SET_IDENTITY_TIMEOUT_MS: u64 = 10_000;

/// Watches the primary validator and, when it fails, runs `set-identity` on the hot
/// standby this watchtower runs next to.
///
/// A check probes the primary's RPC (getHealth, getSlot), the cluster's view of the
/// primary's vote account and its gossip presence (getVoteAccounts and getClusterNodes on
/// the standby and any --cluster-rpc node). After --unhealthy-checks consecutive failing
/// checks, while the standby is caught up, it switches the standby to the primary
/// identity, once per incident. set-identity is safe whatever state the primary is in:
/// the tower lock fences it out.
#[derive(Parser, Debug, Clone)]
#[command(name = "huione-watchtower", version)]
pub struct Args {
    /// The standby validator's ledger directory (its admin socket is <ledger>/admin.rpc).
    #[arg(long, alias = "ledger", value_name = "DIR")]
    pub standby_ledger: PathBuf,
    /// The standby validator's JSON-RPC URL [default: where the standby's admin socket
    /// says its RPC listens, asked at start; so it follows --rpc-port and
    /// --rpc-bind-address].
    #[arg(long, value_name = "URL")]
    pub standby_rpc: Option<String>,
    /// The primary validator's JSON-RPC URL (http://HOST:PORT).
    #[arg(long, value_name = "URL")]
    pub primary_rpc: String,
    /// The primary identity's keypair (validator-keypair.json): what set-identity switches
    /// the standby to.
    #[arg(long, value_name = "KEYPAIR")]
    pub primary_identity: PathBuf,
    /// The primary's vote account (default: the account whose node is the primary identity).
    #[arg(long, value_name = "PUBKEY")]
    pub vote_account: Option<String>,
    /// More nodes whose view of the primary's votes and gossip presence counts
    /// (repeatable). The most favourable view to the primary is used.
    #[arg(long = "cluster-rpc", value_name = "URL")]
    pub cluster_rpcs: Vec<String>,

    /// Time between the starts of two checks. A check starts on time even while earlier
    /// ones still wait for answers, and checks are judged in the order they started: a
    /// frozen primary fails --unhealthy-checks checks after about rpc-timeout +
    /// (unhealthy-checks - 1) x check-interval without an answer.
    #[arg(long, default_value_t = DEFAULT_CHECK_INTERVAL_MS, value_name = "MS")]
    pub check_interval_ms: u64,
    /// How long each RPC probe may take; no answer in time counts as unhealthy.
    #[arg(long, default_value_t = DEFAULT_RPC_TIMEOUT_MS, value_name = "MS")]
    pub rpc_timeout_ms: u64,
    /// Consecutive failing checks before failing over (one healthy check resets the count).
    #[arg(long, default_value_t = Settings::DEFAULT.unhealthy_checks, value_name = "N")]
    pub unhealthy_checks: u32,
    /// A check fails when the cluster sees the primary's vote account more than this many
    /// slots behind the newest vote of any other account.
    #[arg(long, default_value_t = Settings::DEFAULT.max_vote_lag_slots, value_name = "SLOTS")]
    pub max_vote_lag_slots: u64,
    /// A check fails when the primary's processed slot trails the standby's by more.
    #[arg(long, default_value_t = Settings::DEFAULT.max_slot_lag, value_name = "SLOTS")]
    pub max_slot_lag: u64,
    /// A check fails when the primary has heard from no other node for longer than this
    /// while the standby has (it is cut off, though its RPC may still answer). Peers push
    /// gossip every 500 ms, so values under 600 are refused; 0 turns the check off.
    #[arg(long, default_value_t = Settings::DEFAULT.max_peer_silence_ms, value_name = "MS")]
    pub max_peer_silence_ms: u64,
    /// After a failover, no other is triggered for at least this long, and not before the
    /// primary has been healthy again for --rearm-checks checks.
    #[arg(long, default_value_t = Settings::DEFAULT.cooldown_ms, value_name = "MS")]
    pub cooldown_ms: u64,
    /// Consecutive healthy checks (after the cooldown) that end an incident.
    #[arg(long, default_value_t = Settings::DEFAULT.rearm_checks, value_name = "N")]
    pub rearm_checks: u32,
    /// set-identity attempts per incident (a failed attempt is retried after --retry-ms).
    #[arg(long, default_value_t = Settings::DEFAULT.max_attempts, value_name = "N")]
    pub max_attempts: u32,
    #[arg(long, default_value_t = Settings::DEFAULT.retry_ms, value_name = "MS")]
    pub retry_ms: u64,
    /// Fail over even when the standby reports itself behind the cluster.
    #[arg(long)]
    pub allow_standby_behind: bool,

    /// Pass --require-tower to set-identity: fail if storage holds no tower for the
    /// primary identity.
    #[arg(long)]
    pub require_tower: bool,
    /// Decide and log (hooks, audit record, metrics) but do not switch the standby.
    #[arg(long)]
    pub dry_run: bool,
    /// Shell command run before set-identity (env: HUIONE_FAILOVER_*, HUIONE_PRIMARY_*, ...).
    #[arg(long, value_name = "CMD")]
    pub pre_hook: Option<String>,
    /// Shell command run after set-identity (adds HUIONE_FAILOVER_RESULT and _ERROR).
    #[arg(long, value_name = "CMD")]
    pub post_hook: Option<String>,
    /// A failing --pre-hook cancels the attempt (it is retried after --retry-ms).
    #[arg(long)]
    pub pre_hook_veto: bool,
    /// Hooks running longer are killed. The pre-hook delays the failover by its run time.
    #[arg(long, default_value_t = 2_000, value_name = "MS")]
    pub hook_timeout_ms: u64,
    /// The longest wait for set-identity's answer (it may wait for tower storage).
    #[arg(long, default_value_t = DEFAULT_SET_IDENTITY_TIMEOUT_MS, value_name = "MS")]
    pub set_identity_timeout_ms: u64,

    /// Serve Prometheus metrics at http://<metrics-bind>:<PORT>/metrics.
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub metrics_bind: IpAddr,
    /// Append a JSON line for every failover triggered
    /// [default: <standby-ledger>/watchtower-audit.jsonl].
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
}

/// Everything resolved and checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub targets: Targets,
    pub settings: Settings,
    pub action: ActionConfig,
    pub check_interval: Duration,
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag} {value}: {reason}")]
    Bad {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot read the primary identity keypair {path}: {reason} (it must be the primary's validator-keypair.json)")]
    Keypair { path: PathBuf, reason: String },
}

fn bad(flag: &'static str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Bad {
        flag,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl Args {
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let endpoint = |flag, url: &str| Endpoint::parse(url).map_err(|e| bad(flag, url, e));
        let primary_rpc = endpoint("primary-rpc", &self.primary_rpc)?;
        let standby_rpc = self
            .standby_rpc
            .as_deref()
            .map(|u| endpoint("standby-rpc", u))
            .transpose()?;
        if Some(&primary_rpc) == standby_rpc.as_ref() {
            return Err(bad(
                "primary-rpc",
                &self.primary_rpc,
                "is the same as --standby-rpc; give the primary's RPC address",
            ));
        }
        let cluster_rpcs = self
            .cluster_rpcs
            .iter()
            .map(|u| endpoint("cluster-rpc", u))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(v) = &self.vote_account {
            v.parse::<Pubkey>()
                .map_err(|e| bad("vote-account", v, format!("not a base58 pubkey: {e}")))?;
        }
        let keypair =
            Keypair::read_file(&self.primary_identity).map_err(|e| ConfigError::Keypair {
                path: self.primary_identity.clone(),
                reason: e.to_string(),
            })?;
        for (flag, v, min) in [
            ("check-interval-ms", self.check_interval_ms, 10),
            ("rpc-timeout-ms", self.rpc_timeout_ms, 10),
            ("unhealthy-checks", u64::from(self.unhealthy_checks), 1),
            ("rearm-checks", u64::from(self.rearm_checks), 1),
            ("max-attempts", u64::from(self.max_attempts), 1),
            ("set-identity-timeout-ms", self.set_identity_timeout_ms, 100),
        ] {
            if v < min {
                return Err(bad(flag, v, format!("must be at least {min}")));
            }
        }
        if self.max_peer_silence_ms != 0 && self.max_peer_silence_ms < MIN_PEER_SILENCE_MS {
            return Err(bad(
                "max-peer-silence-ms",
                self.max_peer_silence_ms,
                format!(
                    "must be 0 (off) or at least {MIN_PEER_SILENCE_MS}: peers push gossip every \
                     500 ms, so a shorter silence is normal and would fail over a healthy primary"
                ),
            ));
        }
        let audit_log = self
            .audit_log
            .clone()
            .unwrap_or_else(|| self.standby_ledger.join("watchtower-audit.jsonl"));
        Ok(Config {
            targets: Targets {
                primary_rpc: primary_rpc.clone(),
                standby_rpc,
                cluster_rpcs,
                primary_identity: keypair.pubkey().to_string(),
                vote_account: self.vote_account.clone(),
                timeout: Duration::from_millis(self.rpc_timeout_ms),
            },
            settings: Settings {
                unhealthy_checks: self.unhealthy_checks,
                max_vote_lag_slots: self.max_vote_lag_slots,
                max_slot_lag: self.max_slot_lag,
                max_peer_silence_ms: self.max_peer_silence_ms,
                cooldown_ms: self.cooldown_ms,
                rearm_checks: self.rearm_checks,
                max_attempts: self.max_attempts,
                retry_ms: self.retry_ms,
                allow_standby_behind: self.allow_standby_behind,
            },
            action: ActionConfig {
                standby_ledger: self.standby_ledger.clone(),
                primary_keypair: keypair,
                primary_keypair_file: self.primary_identity.clone(),
                primary_rpc_url: primary_rpc.url(),
                require_tower: self.require_tower,
                dry_run: self.dry_run,
                pre_hook: self.pre_hook.clone(),
                post_hook: self.post_hook.clone(),
                pre_hook_veto: self.pre_hook_veto,
                hook_timeout: Duration::from_millis(self.hook_timeout_ms),
                set_identity_timeout: Duration::from_millis(self.set_identity_timeout_ms),
                audit_log,
            },
            check_interval: Duration::from_millis(self.check_interval_ms),
            metrics_addr: self
                .metrics_port
                .map(|p| SocketAddr::new(self.metrics_bind, p)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str], key: &std::path::Path) -> Result<Config, String> {
        let mut v = vec![
            "huione-watchtower",
            "--standby-ledger",
            "/tmp/l",
            "--primary-rpc",
            "http://10.0.0.1:8899",
            "--primary-identity",
            key.to_str().unwrap(),
        ];
        v.extend_from_slice(extra);
        Args::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .resolve()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("validator-keypair.json");
        let kp = Keypair::from_secret(&[3; 32]);
        let e = args(&[], &key).unwrap_err();
        assert!(e.contains("validator-keypair.json"), "{e}");
        kp.write_file(&key, false).unwrap();
        let c = args(&[], &key).unwrap();
        assert_eq!(c.settings, Settings::default());
        assert_eq!(c.check_interval, Duration::from_millis(100));
        assert_eq!(c.targets.timeout, Duration::from_millis(250));
        assert_eq!(c.targets.primary_identity, kp.pubkey().to_string());
        assert_eq!(
            c.action.audit_log,
            PathBuf::from("/tmp/l/watchtower-audit.jsonl")
        );
        assert!(c.metrics_addr.is_none() && !c.action.dry_run);
        // Without --standby-rpc the standby's admin socket is asked at start.
        assert_eq!(c.targets.standby_rpc, None);
        let c = args(
            &[
                "--metrics-port",
                "9100",
                "--dry-run",
                "--cluster-rpc",
                "h:1",
            ],
            &key,
        )
        .unwrap();
        assert_eq!(c.metrics_addr.unwrap().to_string(), "127.0.0.1:9100");
        assert!(c.action.dry_run);
        assert_eq!(c.targets.cluster_rpcs.len(), 1);
        let e = args(&["--standby-rpc", "http://10.0.0.1:8899"], &key).unwrap_err();
        assert!(e.contains("same as --standby-rpc"), "{e}");
        let e = args(&["--unhealthy-checks", "0"], &key).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = args(&["--vote-account", "not-base58!"], &key).unwrap_err();
        assert!(e.contains("--vote-account"), "{e}");
        // A silence shorter than gossip's push interval would fail over a healthy primary.
        let e = args(&["--max-peer-silence-ms", "300"], &key).unwrap_err();
        assert!(
            e.contains("--max-peer-silence-ms") && e.contains("0 (off)"),
            "{e}"
        );
        let off = args(&["--max-peer-silence-ms", "0"], &key).unwrap();
        assert_eq!(off.settings.max_peer_silence_ms, 0);
        assert_eq!(c.settings, Settings::DEFAULT);
    }
}
