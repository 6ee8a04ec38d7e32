//! Keeping etcd bounded: compaction of the revisions huione no longer needs, and the
//! database size, quota and alarms for metrics, `getHealth` and `huione-tower show`.
//!
//! Every tower store writes a new revision of the tower key, and etcd keeps every revision
//! until it is compacted. Left alone, its database grows by about a tower per store until
//! it reaches its quota (`--quota-backend-bytes`), raises the NOSPACE alarm and refuses
//! every write: both machines of a pair then withhold every vote. So the storage compacts
//! its own history as it goes ([`CompactionPolicy`]).
//!
//! Why compaction can never weaken fencing: a store's guard compares the *current*
//! `mod_revision` and value of the lock key (and the tower key's current `mod_revision`).
//! Compaction at revision R removes only the versions of a key that were superseded at or
//! before R; the current version of every key is kept, whatever its `mod_revision`. The
//! audit records (one key per acquire, never overwritten) are current versions too, so
//! the lock history stays readable. The conformance suite checks all of this against a
//! real etcd (`compaction_keeps_fencing_and_history`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, Client, CompactionOptions, GetOptions};
use serde::Serialize;

use super::{lock_ignoring_poison, AttemptError, EtcdTowerStorage};
use crate::{Revision, StorageError};

/// When huione compacts etcd's history (after a successful store, in the background).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Compact after this many successful stores through this client...
    pub every_stores: u64,
    /// ...or at the first store once this long has passed since the last compaction.
    pub every: Duration,
    /// Revisions kept below the newest store's revision (for `etcdctl get --rev` and for
    /// other clients' watches; huione itself needs none of them).
    pub keep_revisions: i64,
}

impl Default for CompactionPolicy {
    /// Every 1,000 stores or every minute, keeping the last 1,000 revisions: at 400 ms
    /// slots that is one compaction a minute and under 1 MB of tower history kept.
    fn default() -> Self {
        CompactionPolicy {
            every_stores: 1000,
            every: Duration::from_secs(60),
            keep_revisions: 1000,
        }
    }
}

/// What an etcd member says about its database, as of one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdStatus {
    /// The member that answered (`https://HOST:PORT`).
    pub endpoint: String,
    /// etcd's version, e.g. `3.4.23`.
    pub version: String,
    /// Size of the member's database file (what the quota is checked against).
    pub db_size_bytes: i64,
    /// The part of it in use; the rest is free pages that `etcdctl defrag` gives back.
    pub db_size_in_use_bytes: i64,
    /// `--quota-backend-bytes`: from the Status answer (etcd 3.6 and later), else from the
    /// member's `/metrics` page; `None` if neither could be read.
    pub quota_bytes: Option<i64>,
    /// The cluster's current revision.
    pub revision: Revision,
    /// Raised alarms, e.g. `NOSPACE` (cluster-wide).
    pub alarms: Vec<String>,
    /// The revision this client last compacted etcd to, if it has.
    pub compacted_revision: Option<Revision>,
}

impl EtcdStatus {
    /// True when etcd's NOSPACE alarm is raised: it refuses every write.
    pub fn no_space(&self) -> bool {
        self.alarms.iter().any(|a| a == "NOSPACE")
    }

    /// One line for logs and `getHealth` when an alarm is raised.
    pub fn alarm_summary(&self) -> Option<String> {
        if self.alarms.is_empty() {
            return None;
        }
        let mut s = format!(
            "etcd alarm {} raised (database {} bytes{})",
            self.alarms.join(","),
            self.db_size_bytes,
            self.quota_bytes
                .map_or(String::new(), |q| format!(" of a {q}-byte quota"))
        );
        if self.no_space() {
            s.push_str(
                ": etcd refuses every write; free space with `etcdctl compact <revision>`, \
                 `etcdctl defrag`, then `etcdctl alarm disarm`",
            );
        }
        Some(s)
    }
}

impl EtcdTowerStorage {
    /// Compacts etcd to `keep_revisions` below its current revision (0: to the current
    /// revision itself). Returns the revision compacted to, or `None` when there was
    /// nothing to compact. Compacting to a revision someone already compacted past (the
    /// other machine of the pair, etcd's auto-compaction) is not an error.
    pub async fn compact(&self, keep_revisions: i64) -> Result<Option<Revision>, StorageError> {
        assert!(keep_revisions >= 0, "keep_revisions must not be negative");
        let current = self.current_revision().await?;
        self.compact_to(current - keep_revisions).await
    }

    async fn current_revision(&self) -> Result<Revision, StorageError> {
        let key = format!("{}/", self.inner.config.prefix);
        self.call_at("compact", |mut kv, url| {
            let key = key.clone();
            async move {
                let opts = GetOptions::new().with_count_only();
                let resp = kv
                    .get(key, Some(opts))
                    .await
                    .map_err(|e| self.failure(&e, &url))?;
                super::header_revision(resp.header(), &url)
            }
        })
        .await
    }

    /// Physical compaction: etcd answers once the old revisions are really gone, so a
    /// `defrag` right after gives their space back.
    async fn compact_to(&self, revision: Revision) -> Result<Option<Revision>, StorageError> {
        if revision <= 1 || revision <= self.inner.compacted.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let done = self
            .call_at("compact", |mut kv, url| async move {
                match kv
                    .compact(revision, Some(CompactionOptions::new().with_physical()))
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(etcd_client::Error::GRpcStatus(s))
                        if s.message().contains("required revision has been compacted") =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(self.failure(&e, &url)),
                }
            })
            .await?;
        self.inner.compacted.fetch_max(revision, Ordering::Relaxed);
        if done {
            tracing::debug!(revision, "compacted etcd's history");
        }
        Ok(Some(revision))
    }

    /// Called after each successful store at `revision`: starts a background compaction
    /// when the policy says so (never more than one at a time, never on the vote path).
    pub(super) fn after_store(&self, revision: Revision) {
        let Some(policy) = self.inner.config.compaction else {
            return;
        };
        let stores = self
            .inner
            .stores_since_compaction
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let due = stores >= policy.every_stores
            || lock_ignoring_poison(&self.inner.last_compaction).elapsed() >= policy.every;
        if !due || self.inner.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner
            .stores_since_compaction
            .store(0, Ordering::Relaxed);
        *lock_ignoring_poison(&self.inner.last_compaction) = Instant::now();
        let this = self.clone();
        tokio::spawn(async move {
            let target = revision - policy.keep_revisions;
            if let Err(e) = this.compact_to(target).await {
                // The next due store tries again; a store failing for the same reason is
                // what the operator sees.
                tracing::warn!(error = %e, revision = target, "cannot compact etcd's history");
            }
            this.inner.compacting.store(false, Ordering::Release);
        });
    }

    /// The revision this client last compacted etcd to (0 if none).
    pub fn compacted_revision(&self) -> Revision {
        self.inner.compacted.load(Ordering::Relaxed)
    }

    /// The database size, quota and alarms, from the first member that answers.
    pub async fn server_status(&self) -> Result<EtcdStatus, StorageError> {
        let mut status = self
            .call_on(
                "status",
                Client::maintenance_client,
                |mut m, url| async move {
                    let s = m.status().await.map_err(|e| self.failure(&e, &url))?;
                    let revision = super::header_revision(s.header(), &url)?;
                    let alarms = m
                        .alarm(AlarmAction::Get, AlarmType::None, None)
                        .await
                        .map_err(|e| self.failure(&e, &url))?;
                    let mut names: Vec<String> = alarms
                        .alarms()
                        .iter()
                        .map(|a| alarm_name(a.alarm()).to_string())
                        .collect();
                    names.sort();
                    names.dedup();
                    Ok::<_, AttemptError>(EtcdStatus {
                        endpoint: url.clone(),
                        version: s.version().to_string(),
                        db_size_bytes: s.db_size(),
                        db_size_in_use_bytes: s.raft_used_db_size(),
                        quota_bytes: if s.db_size_quota() > 0 {
                            Some(s.db_size_quota())
                        } else {
                            quota_from_metrics(&self.inner.config, &url).await
                        },
                        revision,
                        alarms: names,
                        compacted_revision: None,
                    })
                },
            )
            .await?;
        let compacted = self.compacted_revision();
        status.compacted_revision = (compacted > 0).then_some(compacted);
        Ok(status)
    }
}

fn alarm_name(a: AlarmType) -> &'static str {
    match a {
        AlarmType::Nospace => "NOSPACE",
        AlarmType::Corrupt => "CORRUPT",
        AlarmType::None => "NONE",
    }
}

/// Most bytes of etcd's /metrics page read.
const MAX_METRICS_BYTES: u64 = 16 * 1024 * 1024;

/// etcd before 3.6 does not put its quota in the Status answer, but its `/metrics` page
/// (on the client URL, over the same mutual TLS) has `etcd_server_quota_backend_bytes`.
/// `None` if the page cannot be read in time or lacks the line.
async fn quota_from_metrics(config: &super::EtcdConfig, url: &str) -> Option<i64> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let authority = url.strip_prefix("https://")?.to_string();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&config.ca_file).ok()? {
        roots.add(c.ok()?).ok()?;
    }
    let chain = CertificateDer::pem_file_iter(&config.cert_file)
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_file(&config.key_file).ok()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .ok()?;
    let name = ServerName::try_from(config.domain_name.clone()).ok()?;
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let mut stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut page = Vec::new();
        // The server closes the connection after the answer, maybe without a TLS
        // close_notify: what arrived before counts.
        let _ = (&mut stream)
            .take(MAX_METRICS_BYTES)
            .read_to_end(&mut page)
            .await;
        Some(page)
    };
    let page = tokio::time::timeout(config.connect_timeout + config.request_timeout, fetch)
        .await
        .ok()??;
    let text = String::from_utf8_lossy(&page);
    text.lines().find_map(|line| {
        let value = line.strip_prefix("etcd_server_quota_backend_bytes ")?;
        let v: f64 = value.trim().parse().ok()?;
        (v > 0.0).then_some(v as i64)
    })
}
