//! The driver: a check ([`observe::check`]) starts every `check_interval`, without
//! waiting for earlier ones to answer or time out, and the checks' observations are fed
//! to the [`Monitor`] in the order the checks started ([`InOrder`]). A frozen primary so
//! fails `unhealthy_checks` checks in about `rpc_timeout + (unhealthy_checks - 1) x
//! check_interval` rather than `unhealthy_checks x rpc_timeout`, while it still takes that
//! long a silence (no answer to any probe) to fail over. A [`Decision::Failover`] is
//! carried out ([`action::carry_out`]) and its result fed back; the checks still out then
//! are dropped (they describe the time before the failover). Metrics are updated after
//! each check; logs are written when the decision changes, so a steady state does not
//! flood them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huione_os::clock::SteadyClock;
use tokio::task::{JoinError, JoinHandle};

use crate::action;
use crate::config::Config;
use crate::decision::{Decision, Monitor, Observation};
use crate::metrics::{self, Metrics};
use crate::observe;

/// The most checks out at once. Each check ends within the RPC timeout, so about
/// `rpc_timeout / check_interval + 1` are out; this only bounds a misconfiguration.
pub const MAX_CHECKS_IN_FLIGHT: usize = 64;

/// Tasks started one after another whose results are taken in the order they started.
pub struct InOrder<T> {
    queue: VecDeque<JoinHandle<T>>,
}

impl<T: Send + 'static> InOrder<T> {
    pub fn new() -> Self {
        InOrder {
            queue: VecDeque::new(),
        }
    }

    /// Starts `task` (on the current runtime); its result comes after every earlier one's.
    pub fn start(&mut self, task: impl std::future::Future<Output = T> + Send + 'static) {
        self.queue.push_back(tokio::spawn(task));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The oldest task's result, once it is done; never completes while none is out.
    /// Cancel-safe: dropped before the oldest task is done, it loses nothing.
    pub async fn next(&mut self) -> Result<T, JoinError> {
        let Some(oldest) = self.queue.front_mut() else {
            return std::future::pending().await;
        };
        let out = oldest.await;
        self.queue.pop_front();
        out
    }

    /// Aborts every task still out.
    pub fn clear(&mut self) {
        for task in self.queue.drain(..) {
            task.abort();
        }
    }
}

impl<T: Send + 'static> Default for InOrder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for InOrder<T> {
    fn drop(&mut self) {
        for task in &self.queue {
            task.abort();
        }
    }
}

/// What one check returns: its observation, which nodes it could not reach, how long it took.
type CheckResult = (Observation, observe::Unreachable, Duration);

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
    let mut checks: InOrder<CheckResult> = InOrder::new();
    let mut last_label = "";
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => {
                tracing::info!("watchtower stopping");
                return Ok(());
            }
            done = checks.next() => match done {
                Ok(check) => {
                    metrics.checks_in_flight.set(checks.len() as i64);
                    if judge(&cfg, &metrics, &clock, &mut monitor, &mut warned, &mut last_label, check).await {
                        // The checks still out started before the failover; a fresh
                        // series starts now.
                        checks.clear();
                        metrics.checks_in_flight.set(0);
                        interval.reset();
                    }
                }
                Err(e) => tracing::error!("a check task failed: {e}"),
            },
            _ = interval.tick() => {
                if cfg.targets.standby_rpc.is_none() {
                    cfg.targets.standby_rpc = standby_rpc_from_admin(&cfg, &mut warned).await;
                }
                if checks.len() >= MAX_CHECKS_IN_FLIGHT {
                    continue;
                }
                let targets = cfg.targets.clone();
                checks.start(async move {
                    let started = Instant::now();
                    let (obs, unreachable) = observe::check(&targets).await;
                    (obs, unreachable, started.elapsed())
                });
                metrics.checks_in_flight.set(checks.len() as i64);
            }
        }
    }
}

/// Feeds one check to the monitor and carries out a failover it orders; true if it did.
async fn judge(
    cfg: &Config,
    metrics: &Metrics,
    clock: &SteadyClock,
    monitor: &mut Monitor,
    warned: &mut Warned,
    last_label: &mut &'static str,
    (obs, unreachable, took): CheckResult,
) -> bool {
    warn_unreachable(cfg, metrics, &unreachable, warned);
    let now = clock.now_ms();
    let decision = monitor.observe(&obs, now);
    record(metrics, monitor, &obs, &decision, took);
    log_decision(&decision, last_label);
    let Decision::Failover(order) = decision else {
        return false;
    };
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
    true
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

fn record(m: &Metrics, monitor: &Monitor, obs: &Observation, d: &Decision, took: Duration) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Lets the spawned tasks run as far as they can (current-thread runtime).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// True if `next()` has a result without waiting.
    async fn ready(q: &mut InOrder<u32>) -> Option<u32> {
        tokio::select! {
            biased;
            r = q.next() => Some(r.unwrap()),
            _ = std::future::ready(()) => None,
        }
    }

    #[test]
    fn checks_overlap_and_are_judged_in_start_order() {
        rt().block_on(async {
            let started = Arc::new(AtomicUsize::new(0));
            let mut q = InOrder::new();
            let mut release = Vec::new();
            for i in 0..3u32 {
                let (tx, rx) = oneshot::channel::<()>();
                release.push(tx);
                let started = started.clone();
                q.start(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    rx.await.unwrap();
                    i
                });
            }
            settle().await;
            // All three are out at once: none waits for an earlier one to end.
            assert_eq!((started.load(Ordering::SeqCst), q.len()), (3, 3));
            // The newest two end first: nothing is judged before the oldest.
            let mut release = release.into_iter();
            let first = release.next().unwrap();
            for tx in release {
                tx.send(()).unwrap();
            }
            settle().await;
            assert_eq!(ready(&mut q).await, None);
            assert_eq!(q.len(), 3, "a result taken out of order");
            first.send(()).unwrap();
            settle().await;
            assert_eq!(ready(&mut q).await, Some(0));
            assert_eq!(ready(&mut q).await, Some(1));
            assert_eq!(ready(&mut q).await, Some(2));
            assert!(q.is_empty());
            // Nothing out: next() waits (for a check yet to start).
            assert_eq!(ready(&mut q).await, None);
        });
    }

    #[test]
    fn clear_aborts_the_checks_still_out() {
        rt().block_on(async {
            let mut q = InOrder::new();
            let (_hold, rx) = oneshot::channel::<()>();
            let (done_tx, done_rx) = oneshot::channel::<()>();
            q.start(async move {
                let _done_tx = done_tx; // dropped when the task ends or is aborted
                let _ = rx.await;
                7u32
            });
            settle().await;
            q.clear();
            assert!(q.is_empty());
            // The task was aborted: its sender is gone without a send.
            assert!(done_rx.await.is_err());
            q.start(async { 8 });
            settle().await;
            assert_eq!(ready(&mut q).await, Some(8));
        });
    }
}
