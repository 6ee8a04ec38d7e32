//! Watches what can stop tower stores long before they fail, off the vote path: etcd's
//! database size, quota and alarms, and the expiry of the TLS certificates the node
//! loaded. Publishes them as metrics, logs a warning from [`WARN_BEFORE_EXPIRY`] before a
//! certificate expires, and keeps the reason `getHealth` gives when stores fail.
//!
//! Renewed certificates (`huione-certs renew`) are picked up without a restart: on SIGHUP,
//! and at the next poll after the certificate or key files change, the storage makes new
//! connections with the files as they are now (checked with a real call first; if that
//! fails the old connections stay in use and the error is logged).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huione_certs::time::OffsetDateTime;
use huione_rpc::Metrics;
use huione_tower_storage::{AnyTowerStorage, EtcdTowerStorage};

/// How often etcd's status and the certificates are looked at.
const POLL_EVERY: Duration = Duration::from_secs(10);
/// Certificates expiring sooner than this are warned about.
pub const WARN_BEFORE_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);
/// The same warning is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(3600);

/// Shared between the node loop (reads), the store tasks and the poll task (write).
#[derive(Clone, Default)]
pub struct StorageWatch {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// A condition that stops every store (etcd's NOSPACE alarm, an expired certificate).
    problem: Option<String>,
    /// The last store error, cleared by a successful store.
    store_error: Option<String>,
}

impl StorageWatch {
    /// Starts the poll task for etcd storage; other storages have nothing to watch.
    pub fn spawn(storage: &AnyTowerStorage, metrics: Arc<Metrics>) -> StorageWatch {
        let watch = StorageWatch::default();
        if let AnyTowerStorage::Etcd(etcd) = storage {
            let (etcd, w) = (etcd.clone(), watch.clone());
            tokio::spawn(async move { w.poll(etcd, metrics).await });
        }
        watch
    }

    /// Why stores fail or will fail, for `getHealth`: the last store error, else a
    /// condition that stops every store.
    pub fn reason(&self) -> Option<String> {
        let s = self.state();
        s.store_error.clone().or_else(|| s.problem.clone())
    }

    /// A condition that stops every store, even before one fails.
    pub fn problem(&self) -> Option<String> {
        self.state().problem.clone()
    }

    pub fn store_failed(&self, error: String) {
        self.state().store_error = Some(error);
    }

    pub fn store_succeeded(&self) {
        self.state().store_error = None;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn poll(self, etcd: EtcdTowerStorage, metrics: Arc<Metrics>) {
        let cfg = etcd.config().clone();
        let files = [
            cfg.cert_file.clone(),
            cfg.key_file.clone(),
            cfg.ca_file.clone(),
        ];
        let mut loaded = modified(&files);
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| tracing::warn!("cannot listen for SIGHUP: {e}"))
            .ok();
        let mut warned: Option<Instant> = None;
        let mut first = true;
        loop {
            if !first {
                let sighup = tokio::select! {
                    _ = tokio::time::sleep(POLL_EVERY) => false,
                    _ = recv(&mut hangup) => true,
                };
                let now = modified(&files);
                if sighup || now != loaded {
                    let why = if sighup {
                        "SIGHUP"
                    } else {
                        "the files changed"
                    };
                    match etcd.reload_tls().await {
                        Ok(()) => {
                            tracing::info!("certificates reloaded ({why})");
                            loaded = now;
                            warned = None;
                        }
                        Err(e) => tracing::error!(
                            "cannot reload the etcd certificates ({why}); the old \
                             connections stay in use: {e}"
                        ),
                    }
                }
            }
            first = false;
            let mut problems = Vec::new();
            match etcd.server_status().await {
                Ok(st) => {
                    metrics.etcd_db_size_bytes.set(st.db_size_bytes);
                    metrics
                        .etcd_db_size_in_use_bytes
                        .set(st.db_size_in_use_bytes);
                    metrics.etcd_quota_bytes.set(st.quota_bytes.unwrap_or(0));
                    metrics.etcd_alarm_nospace.set(i64::from(st.no_space()));
                    metrics
                        .etcd_compacted_revision
                        .set(st.compacted_revision.unwrap_or(0));
                    if let Some(summary) = st.alarm_summary() {
                        problems.push(summary);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read etcd's status"),
            }
            let now = OffsetDateTime::now_utc();
            let certs = [
                ("client certificate", &cfg.cert_file, "--etcd-cert-file"),
                ("CA certificate", &cfg.ca_file, "--etcd-cacert-file"),
            ];
            let mut warnings = Vec::new();
            for (i, (what, path, flag)) in certs.into_iter().enumerate() {
                let gauge = if i == 0 {
                    &metrics.tls_client_cert_expiry_seconds
                } else {
                    &metrics.tls_ca_cert_expiry_seconds
                };
                match expiry(path, now) {
                    Ok((left, not_after)) => {
                        gauge.set(left);
                        let text = format!(
                            "the {what} {} ({flag}) expires at {not_after}",
                            path.display()
                        );
                        if left <= 0 {
                            problems.push(format!(
                                "{text}: it has EXPIRED, etcd refuses new connections; renew \
                                 it with `huione-certs renew` and send the validator SIGHUP"
                            ));
                        } else if left < WARN_BEFORE_EXPIRY.as_secs() as i64 {
                            warnings.push(format!(
                                "{text}, in {} days: renew it with `huione-certs renew` and \
                                 send the validator SIGHUP",
                                left / 86_400
                            ));
                        }
                    }
                    Err(e) => tracing::warn!("cannot read the {what} {}: {e}", path.display()),
                }
            }
            if !warnings.is_empty() && warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                for w in &warnings {
                    tracing::warn!("{w}");
                }
                warned = Some(Instant::now());
            }
            let problem = (!problems.is_empty()).then(|| problems.join("; "));
            let changed = {
                let mut s = self.state();
                let changed = s.problem != problem;
                s.problem = problem.clone();
                changed
            };
            if changed {
                match &problem {
                    Some(p) => tracing::error!("tower storage cannot store: {p}"),
                    None => tracing::info!("tower storage problem cleared"),
                }
            }
        }
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Modification times of `files` (None for a file that cannot be read).
fn modified(files: &[PathBuf]) -> Vec<Option<std::time::SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// Seconds left until the first certificate in `path` expires, and the expiry date.
fn expiry(path: &Path, now: OffsetDateTime) -> Result<(i64, String), huione_certs::CertError> {
    let infos = huione_certs::inspect(path)?;
    let first = infos
        .into_iter()
        .min_by_key(|i| i.not_after)
        .ok_or_else(|| huione_certs::CertError::NotFound {
            path: PathBuf::from(path),
            hint: "the file holds no certificate".into(),
        })?;
    Ok((
        (first.not_after - now).whole_seconds(),
        huione_certs::utc(first.not_after),
    ))
}
