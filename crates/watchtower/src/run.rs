//! The driver: every `check_interval` one check ([`observe::check`]), fed to the
//! [`Monitor`]; a [`Decision::Failover`] is carried out ([`action::carry_out`]) and its
//! result fed back. Metrics are updated after each check; logs are written when the
//! decision changes, so a steady state does not flood them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use huione_os::clock::SteadyClock;

use crate::action;
use crate::config::Config;
use crate::decision::{Decision, Monitor};
use crate::metrics::{self, Metrics};
use crate::observe;

/// Runs until `shutdown` completes.
pub async fn run(
    cfg: Config,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(addr) = cfg.metrics_addr {
        let listener = metrics::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot serve metrics on {addr}: {e} (is --metrics-port in use?)")
        })?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, metrics.clone()));
    }
    tracing::info!(
        primary = %cfg.targets.primary_identity,
        primary_rpc = %cfg.targets.primary_rpc.url(),
        standby_rpc = %cfg.targets.standby_rpc.as_ref().map_or("(from its admin socket)".into(), |e| e.url()),
        standby_ledger = %cfg.action.standby_ledger.display(),
        check_interval_ms = cfg.check_interval.as_millis() as u64,
        rpc_timeout_ms = cfg.targets.timeout.as_millis() as u64,
        unhealthy_checks = cfg.settings.unhealthy_checks,
        dry_run = cfg.action.dry_run,
        "watchtower started; arms once the primary is seen healthy"
    );
    let mut cfg = cfg;
    let mut warned = Warned::default();
    let clock = SteadyClock::new();
    let mut monitor = Monitor::new(cfg.settings.clone(), cfg.targets.primary_identity.clone());
    let mut interval = tokio::time::interval(cfg.check_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_label = "";
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("watchtower stopping");
                return Ok(());
            }
            _ = interval.tick() => {}
        }
        let started = Instant::now();
        if cfg.targets.standby_rpc.is_none() {
            cfg.targets.standby_rpc = standby_rpc_from_admin(&cfg, &mut warned).await;
        }
        let (obs, unreachable) = observe::check(&cfg.targets).await;
        warn_unreachable(&cfg, &metrics, &unreachable, &mut warned);
        let now = clock.now_ms();
        let decision = monitor.observe(&obs, now);
        record(&metrics, &monitor, &obs, &decision, started.elapsed());
        log_decision(&decision, &mut last_label);
        if let Decision::Failover(order) = decision {
            tracing::warn!(
                reason = order.reason(),
                failing_checks = order.failing_checks,
                vote_lag_slots = ?order.vote_lag_slots,
                attempt = order.attempt,
                dry_run = cfg.action.dry_run,
                "primary failed: {}; {} set-identity {} on {}",
                order.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                if cfg.action.dry_run { "would run (dry run)" } else { "running" },
                cfg.action.primary_keypair_file.display(),
                cfg.action.standby_ledger.display(),
            );
            let entry = action::carry_out(&cfg.action, &order, now).await;
            let done = clock.now_ms();
            metrics.failover(entry.result.label());
            metrics.last_failover_unix_ms.set_u64(done);
            match &entry.error {
                None => tracing::warn!(
                    result = entry.result.label(),
                    lock_revision = ?entry.lock_revision,
                    set_identity_ms = ?entry.set_identity_ms,
                    "failover finished {} ms after the decision, {} ms after the first failing check",
                    done.saturating_sub(now),
                    done.saturating_sub(order.first_failure_ms),
                ),
                Some(e) => tracing::error!(
                    result = entry.result.label(),
                    attempt = order.attempt,
                    "failover failed: {e}"
                ),
            }
            monitor.failover_finished(entry.result.handled(), done);
            metrics.armed.set(i64::from(monitor.armed()));
        }
    }
}

/// When each repeated warning was last logged.
#[derive(Default)]
struct Warned {
    primary: Option<Instant>,
    standby: Option<Instant>,
    admin: Option<Instant>,
}

/// Repeated warnings at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

fn due(last: &mut Option<Instant>) -> bool {
    let due = last.is_none_or(|t| t.elapsed() >= WARN_EVERY);
    if due {
        *last = Some(Instant::now());
    }
    due
}

/// Asks the standby's admin socket where its RPC listens (when --standby-rpc is not given).
async fn standby_rpc_from_admin(
    cfg: &Config,
    warned: &mut Warned,
) -> Option<huione_rpc::client::Endpoint> {
    let ledger = &cfg.action.standby_ledger;
    let asked = async {
        let client = huione_rpc::AdminClient::connect(ledger)
            .await
            .map_err(|e| e.to_string())?;
        let mut client = client.with_timeout(cfg.targets.timeout.max(Duration::from_secs(1)));
        let info = client.contact_info().await.map_err(|e| e.to_string())?;
        let rpc = info
            .rpc
            .ok_or_else(|| "the standby serves no RPC".to_string())?;
        huione_rpc::client::Endpoint::parse(&format!("http://{rpc}"))
    };
    match asked.await {
        Ok(ep) => {
            tracing::info!(standby_rpc = %ep.url(), "the standby's admin socket says its RPC is at {}", ep.url());
            Some(ep)
        }
        Err(e) => {
            if due(&mut warned.admin) {
                tracing::warn!(standby_ledger = %ledger.display(),
                    "cannot ask the standby validator where its RPC is ({e}): the watchtower \
                     cannot arm until it answers. Is the standby running with --ledger {}? \
                     Or pass --standby-rpc", ledger.display());
            }
            None
        }
    }
}

/// Metrics every check, and a warning (bounded rate) while a node's RPC cannot be reached.
fn warn_unreachable(cfg: &Config, m: &Metrics, u: &observe::Unreachable, warned: &mut Warned) {
    m.primary_rpc_up.set(i64::from(u.primary.is_none()));
    m.standby_rpc_up.set(i64::from(u.standby.is_none()));
    if let Some(e) = &u.standby {
        if cfg.targets.standby_rpc.is_some() && due(&mut warned.standby) {
            tracing::warn!(standby_rpc = ?cfg.targets.standby_rpc.as_ref().map(|e| e.url()),
                "cannot reach the standby's RPC ({e}): without it the watchtower cannot arm \
                 or fail over. Check --standby-rpc against the standby's --rpc-port and \
                 --rpc-bind-address (without --standby-rpc the admin socket is asked)");
        }
    } else {
        warned.standby = None;
    }
    if let Some(e) = &u.primary {
        if due(&mut warned.primary) {
            tracing::warn!(primary_rpc = %cfg.targets.primary_rpc.url(),
                "cannot reach the primary's RPC ({e}); check --primary-rpc and that the \
                 primary's --rpc-bind-address is reachable from here");
        }
    } else {
        warned.primary = None;
    }
}

fn record(
    m: &Metrics,
    monitor: &Monitor,
    obs: &crate::decision::Observation,
    d: &Decision,
    took: Duration,
) {
    m.checks.inc();
    let reasons = match d {
        Decision::Suspect { reasons, .. } | Decision::Hold { reasons, .. } => reasons.clone(),
        Decision::Failover(o) => o.reasons.clone(),
        Decision::Healthy => Vec::new(),
    };
    if !reasons.is_empty() {
        m.failed_checks.inc();
    }
    for r in &reasons {
        m.failure(r.label());
    }
    m.consecutive_failures
        .set(i64::from(monitor.failing_checks()));
    m.armed.set(i64::from(monitor.armed()));
    m.vote_lag_slots
        .set(obs.votes.map_or(-1, |v| v.lag_slots() as i64));
    let ms = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    m.primary_silence_ms.set(ms(obs.primary_silence_ms));
    m.standby_silence_ms.set(ms(obs.standby_silence_ms));
    m.last_check_ms
        .set_u64(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
    m.set_last_decision(d.label());
}

fn log_decision(d: &Decision, last: &mut &'static str) {
    let label = d.label();
    match d {
        Decision::Suspect {
            failing_checks,
            needed,
            reasons,
        } => tracing::info!(
            failing_checks,
            needed,
            "primary check failed: {}",
            reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Decision::Healthy if *last != label => tracing::info!("primary healthy"),
        Decision::Hold { why, reasons } if *last != label => tracing::info!(
            hold = why.label(),
            failures = reasons.len(),
            "holding: {why:?}"
        ),
        _ => {}
    }
    *last = label;
}
