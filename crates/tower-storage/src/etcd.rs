//! Tower storage in etcd over mutual TLS, every call bounded and retried across endpoints.
//!
//! Design:
//!
//! * **One client per endpoint.** etcd-client puts all endpoints into one tonic balanced
//!   channel; a request routed to a frozen (SIGSTOPped) member then hangs on its open TCP
//!   connection, and a retry may be routed to it again. With one client per endpoint we
//!   choose where each attempt goes: the endpoint that answered last, then the others in
//!   turn.
//! * **Every attempt is bounded** by `request_timeout` (tonic's per-request timeout, plus a
//!   `tokio::time::timeout` around the call, since a frozen server keeps the connection
//!   open), connecting by `connect_timeout` (TCP and, separately, the TLS handshake), a dead
//!   connection by HTTP/2 keep-alive, and **every call** by `deadline`: transient failures
//!   are retried across endpoints with a small backoff until it passes, then the call fails
//!   with [`StorageError::Unavailable`] naming the endpoints and the last error of each.
//! * **Unknown outcomes are failures.** A store whose answer did not arrive may or may not
//!   have been applied; it is never reported as success (the caller withholds the vote). A
//!   retry is still safe: the fencing compare makes a retried store succeed only while the
//!   lock is still ours, and writing the same tower twice is harmless.
//! * Reads are linearizable (etcd's default), so a load sees every acknowledged store.

mod diagnose;
mod maintenance;
mod tls;

pub use maintenance::{CompactionPolicy, EtcdStatus};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use huione_keys::Pubkey;
use huione_tower::SavedTower;

use crate::{
    check_tower_identity, keys, Lease, LockEvent, LockLost, LockOwner, LockRecord, Revision,
    StorageError, StoreReceipt, TowerStorage, Unavailable,
};
use diagnose::{diagnose, Failure, Kind, TlsNames};

/// How to reach etcd. Mirrors the validator's `--etcd-*` flags.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `HOST:PORT` (an `https://` prefix is accepted). Several for a multi-member cluster.
    pub endpoints: Vec<String>,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The name the server certificate must carry (`--etcd-domain-name`).
    pub domain_name: String,
    /// Key prefix, default `/huione`.
    pub prefix: String,
    /// TCP connect + TLS handshake bound per endpoint.
    pub connect_timeout: Duration,
    /// Bound for one request to one endpoint.
    pub request_timeout: Duration,
    /// Bound for a whole call, retries across endpoints included.
    pub deadline: Duration,
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
    /// When to compact etcd's history of our writes; `None` leaves it to etcd's
    /// `--auto-compaction-*` (or to nobody: then etcd grows until its quota).
    pub compaction: Option<CompactionPolicy>,
}

impl EtcdConfig {
    /// Defaults: domain `localhost`, prefix `/huione`, connect 1 s, request 1 s,
    /// deadline 3 s, keep-alive every 1 s with a 1 s timeout, the default
    /// [`CompactionPolicy`].
    pub fn new(
        endpoints: Vec<String>,
        ca_file: PathBuf,
        cert_file: PathBuf,
        key_file: PathBuf,
    ) -> Self {
        EtcdConfig {
            endpoints,
            ca_file,
            cert_file,
            key_file,
            domain_name: "localhost".into(),
            prefix: "/huione".into(),
            connect_timeout: Duration::from_millis(1000),
            request_timeout: Duration::from_millis(1000),
            deadline: Duration::from_millis(3000),
            keep_alive_interval: Duration::from_millis(1000),
            keep_alive_timeout: Duration::from_millis(1000),
            compaction: Some(CompactionPolicy::default()),
        }
    }
}

/// First pause between rounds over all endpoints; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// Guarded writes retried at once on one endpoint when the guard fails because a key
/// changed; more means someone keeps writing it.
const CAS_ROUNDS: usize = 8;

/// Tower storage in etcd. Clones share the connections.
#[derive(Clone)]
pub struct EtcdTowerStorage {
    inner: Arc<Inner>,
}

struct Inner {
    config: EtcdConfig,
    /// One client per endpoint; replaced as a whole when the certificates are reloaded.
    members: RwLock<Arc<Vec<Member>>>,
    /// Index of the member that answered last: the next call starts there.
    preferred: AtomicUsize,
    names: TlsNames,
    /// "https://a,https://b" for messages.
    target: String,
    /// Per identity, the tower key's mod_revision after our last write (or as read at
    /// acquire): the guard of the next store.
    tower_revs: Mutex<HashMap<Pubkey, Revision>>,
    /// Compaction bookkeeping (see `maintenance.rs`).
    stores_since_compaction: AtomicU64,
    last_compaction: Mutex<Instant>,
    compacting: AtomicBool,
    /// The highest revision this client compacted etcd to.
    compacted: AtomicI64,
}

struct Member {
    /// `https://HOST:PORT`.
    url: String,
    client: Client,
}

/// Why one attempt did not produce a result.
enum AttemptError {
    /// Try again (another endpoint, or later).
    Retry(Failure),
    /// A definite answer that retrying cannot change (lock lost, bad tower, refused).
    Final(StorageError),
}

impl From<Failure> for AttemptError {
    fn from(f: Failure) -> Self {
        match f.kind {
            Kind::Transient => AttemptError::Retry(f),
            Kind::Tls => AttemptError::Retry(f),
            Kind::Refused => AttemptError::Final(StorageError::Config(f.detail)),
            // Made final (with the target) by `EtcdTowerStorage::failure`.
            Kind::NoSpace => AttemptError::Retry(f),
        }
    }
}

impl EtcdTowerStorage {
    /// Reads the certificate files, then connects and verifies the connection with a real
    /// call (a read of the key prefix), bounded by `config.deadline`.
    ///
    /// Errors: [`StorageError::Config`] for unusable files or names, and for TLS failures
    /// that retrying cannot fix (server not trusted, wrong domain name, client certificate
    /// rejected); [`StorageError::Unavailable`] when no endpoint answered.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StorageError> {
        if config.endpoints.is_empty() {
            return Err(StorageError::Config(
                "no etcd endpoint given: pass --etcd-endpoint HOST:PORT (once per member)".into(),
            ));
        }
        let urls = config
            .endpoints
            .iter()
            .map(|e| endpoint_url(e))
            .collect::<Result<Vec<_>, _>>()?;
        let members = Self::clients(&config, &urls).await?;
        let storage = EtcdTowerStorage {
            inner: Arc::new(Inner {
                names: TlsNames {
                    ca_file: config.ca_file.clone(),
                    cert_file: config.cert_file.clone(),
                    domain_name: config.domain_name.clone(),
                },
                target: urls.join(","),
                config,
                members: RwLock::new(Arc::new(members)),
                preferred: AtomicUsize::new(0),
                tower_revs: Mutex::new(HashMap::new()),
                stores_since_compaction: AtomicU64::new(0),
                last_compaction: Mutex::new(Instant::now()),
                compacting: AtomicBool::new(false),
                compacted: AtomicI64::new(0),
            }),
        };
        storage.verify(&storage.members()).await?;
        Ok(storage)
    }

    /// Reads the certificate files again and makes new connections with them, for
    /// renewed certificates (`huione-certs renew`) without a restart. The new connections
    /// are checked with a real call first; if that fails, the old ones stay in use and the
    /// error says why. Calls in flight finish on the old connections.
    pub async fn reload_tls(&self) -> Result<(), StorageError> {
        let urls: Vec<String> = self.members().iter().map(|m| m.url.clone()).collect();
        let members = Arc::new(Self::clients(&self.inner.config, &urls).await?);
        self.verify(&members).await?;
        *self
            .inner
            .members
            .write()
            .unwrap_or_else(|p| p.into_inner()) = members;
        tracing::info!(
            cert = %self.inner.config.cert_file.display(),
            "reloaded the etcd client certificate: new connections use it"
        );
        Ok(())
    }

    /// The current clients (replaced as a whole by [`Self::reload_tls`]).
    fn members(&self) -> Arc<Vec<Member>> {
        self.inner
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One lazily connecting client per endpoint, with the certificate files as they are
    /// now on disk.
    async fn clients(config: &EtcdConfig, urls: &[String]) -> Result<Vec<Member>, StorageError> {
        let tls = tls::tls_options(config)?;
        let options = ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(config.keep_alive_interval, config.keep_alive_timeout)
            // A member cut off from the cluster answers "no leader" at once instead of
            // holding the request until it times out.
            .with_require_leader(true);
        let mut members = Vec::with_capacity(urls.len());
        for url in urls {
            // Lazy: this makes no connection yet, so errors here are configuration errors.
            let client = Client::connect([url.as_str()], Some(options.clone()))
                .await
                .map_err(|e| {
                    StorageError::Config(format!(
                        "cannot set up the etcd client for {url} with {} ({}) and {} ({}): {}",
                        config.cert_file.display(),
                        tls::CERT_FLAG,
                        config.key_file.display(),
                        tls::KEY_FLAG,
                        diagnose::chain(&e)
                    ))
                })?;
            members.push(Member {
                url: url.clone(),
                client,
            });
        }
        Ok(members)
    }

    /// The configuration this storage was made with.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// Asks every endpoint at once; done as soon as one answers. If none does, a TLS
    /// failure (which retrying cannot fix) wins over "unreachable".
    async fn verify(&self, members: &[Member]) -> Result<(), StorageError> {
        let inner = &self.inner;
        let started = Instant::now();
        let prefix = format!("{}/", inner.config.prefix);
        let per_endpoint = inner.config.deadline;
        let mut set = tokio::task::JoinSet::new();
        for (i, m) in members.iter().enumerate() {
            let mut kv = m.client.kv_client();
            let prefix = prefix.clone();
            set.spawn(async move {
                let opts = GetOptions::new().with_prefix().with_count_only();
                let r = tokio::time::timeout(per_endpoint, kv.get(prefix, Some(opts))).await;
                (i, r)
            });
        }
        let mut failures: Vec<(usize, Failure)> = Vec::new();
        while let Some(joined) = set.join_next().await {
            let Ok((i, result)) = joined else { continue };
            let url = &members[i].url;
            match result {
                Ok(Ok(_)) => {
                    inner.preferred.store(i, Ordering::Relaxed);
                    for (j, f) in &failures {
                        tracing::warn!(
                            endpoint = %members[*j].url,
                            "etcd endpoint did not answer at start-up: {}", f.detail
                        );
                    }
                    tracing::info!(
                        "connected to etcd {} (prefix {}) via {url} in {:?}",
                        inner.target,
                        inner.config.prefix,
                        started.elapsed()
                    );
                    return Ok(());
                }
                Ok(Err(e)) => failures.push((
                    i,
                    at_connect(diagnose(&e, url, &inner.names), url, &inner.names),
                )),
                Err(_) => failures.push((
                    i,
                    Failure::transient(format!(
                        "etcd at {url} did not answer within {per_endpoint:?}"
                    )),
                )),
            }
        }
        failures.sort_by_key(|(i, _)| *i);
        let details: Vec<String> = failures.iter().map(|(_, f)| f.detail.clone()).collect();
        if let Some((_, tls)) = failures
            .iter()
            .find(|(_, f)| matches!(f.kind, Kind::Tls | Kind::Refused))
        {
            let others: Vec<&String> = details.iter().filter(|d| **d != tls.detail).collect();
            return Err(StorageError::Config(if others.is_empty() {
                tls.detail.clone()
            } else {
                format!(
                    "{}; other endpoints: {}",
                    tls.detail,
                    others
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }));
        }
        Err(Unavailable {
            target: format!("etcd {}", inner.target),
            detail: format!(
                "no endpoint answered within {:?}: {}",
                started.elapsed(),
                details.join("; ")
            ),
        }
        .into())
    }

    /// One transaction, fenced like a store (the lock key is exactly `lease`'s): appends
    /// `record` to the history and, if `to_lock`, writes it into the lock key. A retry of
    /// an attempt whose answer was lost finds the lock changed by that attempt (a release)
    /// and reports `LockLost`: either way the lock is no longer ours.
    async fn fenced_record(
        &self,
        lease: &Lease,
        record: LockOwner,
        to_lock: bool,
    ) -> Result<Revision, StorageError> {
        let prefix = &self.inner.config.prefix;
        let identity = lease.identity();
        let lock_key = keys::lock(prefix, &identity);
        let audit_key = keys::audit(prefix, &identity, &record);
        let bytes = record.to_bytes();
        let owner_bytes = lease.owner_bytes().to_vec();
        let ours = lease.revision();
        self.call_at("lock record", |mut kv, url| {
            let (lock_key, audit_key, bytes, owner_bytes) =
                (&lock_key, &audit_key, &bytes, &owner_bytes);
            async move {
                let mut puts = vec![TxnOp::put(audit_key.clone(), bytes.clone(), None)];
                if to_lock {
                    puts.push(TxnOp::put(lock_key.clone(), bytes.clone(), None));
                }
                let txn = Txn::new()
                    .when(vec![
                        Compare::mod_revision(lock_key.clone(), CompareOp::Equal, ours),
                        Compare::value(lock_key.clone(), CompareOp::Equal, owner_bytes.clone()),
                    ])
                    .and_then(puts)
                    .or_else(vec![TxnOp::get(lock_key.clone(), None)]);
                let resp = kv.txn(txn).await.map_err(|e| self.failure(&e, &url))?;
                let revision = header_revision(resp.header(), &url)?;
                if resp.succeeded() {
                    return Ok(revision);
                }
                Err(AttemptError::Final(
                    LockLost {
                        identity,
                        ours,
                        holder: first_get(&resp).as_ref().and_then(record_of),
                    }
                    .into(),
                ))
            }
        })
        .await
    }

    /// Runs `op` against the endpoints until it succeeds, fails definitely, or the deadline
    /// passes. `what` names the operation in errors.
    async fn call_at<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StorageError>
    where
        F: FnMut(KvClient, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, AttemptError>>,
    {
        self.call_on(what, Client::kv_client, op).await
    }

    /// [`Self::call_at`] with another of etcd's services (`pick` takes it from a client).
    async fn call_on<C, T, F, Fut>(
        &self,
        what: &str,
        pick: fn(&Client) -> C,
        mut op: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut(C, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, AttemptError>>,
    {
        let inner = &self.inner;
        let cfg = &inner.config;
        let started = Instant::now();
        let deadline = started + cfg.deadline;
        let members = self.members();
        let n = members.len();
        let first = inner.preferred.load(Ordering::Relaxed) % n;
        let mut last: Vec<Option<String>> = vec![None; n];
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0usize;
        loop {
            for k in 0..n {
                let i = (first + k) % n;
                let now = Instant::now();
                if now >= deadline {
                    return Err(self.unavailable(what, started, attempts, &last));
                }
                let budget = cfg.request_timeout.min(deadline - now);
                let member = &members[i];
                attempts += 1;
                match tokio::time::timeout(budget, op(pick(&member.client), member.url.clone()))
                    .await
                {
                    Ok(Ok(v)) => {
                        if i != first {
                            tracing::debug!(endpoint = %member.url, "etcd {what} succeeded on another endpoint");
                        }
                        inner.preferred.store(i, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Ok(Err(AttemptError::Final(e))) => {
                        inner.preferred.store(i, Ordering::Relaxed);
                        return Err(e);
                    }
                    Ok(Err(AttemptError::Retry(f))) => {
                        tracing::debug!(endpoint = %member.url, "etcd {what} failed: {}", f.detail);
                        last[i] = Some(f.detail);
                    }
                    Err(_) => {
                        let d = format!(
                            "etcd at {} did not answer within {budget:?}{}",
                            member.url,
                            if matches!(what, "store" | "acquire") {
                                " (the write may or may not have been applied)"
                            } else {
                                ""
                            }
                        );
                        tracing::debug!("etcd {what}: {d}");
                        last[i] = Some(d);
                    }
                }
            }
            // Every endpoint failed once in this round: pause a little before the next.
            let now = Instant::now();
            if now >= deadline {
                return Err(self.unavailable(what, started, attempts, &last));
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn unavailable(
        &self,
        what: &str,
        started: Instant,
        attempts: usize,
        last: &[Option<String>],
    ) -> StorageError {
        let errors: Vec<String> = last.iter().flatten().cloned().collect();
        Unavailable {
            target: format!("etcd {}", self.inner.target),
            detail: format!(
                "{what} did not succeed within the {:?} deadline ({attempts} attempts in {:?}); \
                 last errors: {}",
                self.inner.config.deadline,
                started.elapsed(),
                if errors.is_empty() {
                    "none (deadline too short for one attempt)".to_string()
                } else {
                    errors.join("; ")
                }
            ),
        }
        .into()
    }

    fn known_tower_rev(&self, identity: &Pubkey) -> Revision {
        // Unknown: guess "absent"; a wrong guess costs one extra round trip.
        lock_ignoring_poison(&self.inner.tower_revs)
            .get(identity)
            .copied()
            .unwrap_or(0)
    }

    fn remember_tower_rev(&self, identity: &Pubkey, revision: Revision) {
        lock_ignoring_poison(&self.inner.tower_revs).insert(*identity, revision);
    }

    fn failure(&self, e: &etcd_client::Error, url: &str) -> AttemptError {
        let f = diagnose(e, url, &self.inner.names);
        if f.kind == Kind::NoSpace {
            // Every member shares the alarm: trying the others until the deadline would
            // only hide the cause behind "unavailable".
            return AttemptError::Final(StorageError::NoSpace {
                target: format!("etcd {}", self.inner.target),
                detail: f.detail,
            });
        }
        f.into()
    }
}

/// `HOST:PORT` or `https://HOST:PORT` → `https://HOST:PORT`.
fn endpoint_url(e: &str) -> Result<String, StorageError> {
    let e = e.trim().trim_end_matches('/');
    if e.is_empty() {
        return Err(StorageError::Config(
            "an empty --etcd-endpoint was given: pass HOST:PORT".into(),
        ));
    }
    if let Some(rest) = e.strip_prefix("http://") {
        return Err(StorageError::Config(format!(
            "--etcd-endpoint {e}: plain http is not supported, etcd is reached over mutual \
             TLS; use https://{rest} or {rest}"
        )));
    }
    let url = if e.starts_with("https://") {
        e.to_string()
    } else if e.contains("://") {
        return Err(StorageError::Config(format!(
            "--etcd-endpoint {e}: unsupported scheme; pass HOST:PORT or https://HOST:PORT"
        )));
    } else {
        format!("https://{e}")
    };
    let authority = &url["https://".len()..];
    if authority.is_empty() || authority.contains('/') {
        return Err(StorageError::Config(format!(
            "--etcd-endpoint {e}: expected HOST:PORT (no path)"
        )));
    }
    Ok(url)
}

fn record_of(kv: &etcd_client::KeyValue) -> Option<LockRecord> {
    Some(LockRecord {
        owner: LockOwner::from_bytes(kv.value())?,
        revision: kv.mod_revision(),
    })
}

/// The get responses of a transaction, in order.
fn get_responses(resp: &TxnResponse) -> Vec<etcd_client::GetResponse> {
    resp.op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .collect()
}

/// The first key returned by the first get of a transaction.
fn first_get(resp: &TxnResponse) -> Option<etcd_client::KeyValue> {
    get_responses(resp)
        .into_iter()
        .next()
        .and_then(|mut g| g.take_kvs().into_iter().next())
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn header_revision(
    header: Option<&etcd_client::ResponseHeader>,
    url: &str,
) -> Result<Revision, AttemptError> {
    header.map(|h| h.revision()).ok_or_else(|| {
        AttemptError::Retry(Failure::transient(format!(
            "etcd at {url} answered without a response header"
        )))
    })
}

impl TowerStorage for EtcdTowerStorage {
    fn describe(&self) -> String {
        format!(
            "etcd {} (prefix {})",
            self.inner.target, self.inner.config.prefix
        )
    }

    async fn acquire(&self, identity: &Pubkey, owner: LockOwner) -> Result<Lease, StorageError> {
        let prefix = &self.inner.config.prefix;
        let bytes = owner.to_bytes();
        let lock_key = keys::lock(prefix, identity);
        let audit_key = keys::audit(prefix, identity, &owner);
        let tower_key = keys::tower(prefix, identity);
        // The lock key's mod_revision as last seen (0 = absent). Each write is guarded by
        // it, so an attempt whose answer was lost cannot apply later, on top of a newer
        // acquire (ours or another instance's). If the guard fails, the else branch tells us
        // the current revision and we write again: the acquire stays unconditional.
        let seen = Mutex::new(0 as Revision);
        let (revision, tower_rev) = self
            .call_at("acquire", |mut kv, url| {
                let (seen, lock_key, audit_key, tower_key, bytes) =
                    (&seen, &lock_key, &audit_key, &tower_key, &bytes);
                async move {
                    for _ in 0..CAS_ROUNDS {
                        let expected = *lock_ignoring_poison(seen);
                        let txn = Txn::new()
                            .when(vec![Compare::mod_revision(
                                lock_key.clone(),
                                CompareOp::Equal,
                                expected,
                            )])
                            .and_then(vec![
                                TxnOp::put(lock_key.clone(), bytes.clone(), None),
                                TxnOp::put(audit_key.clone(), bytes.clone(), None),
                                TxnOp::get(tower_key.clone(), None),
                            ])
                            .or_else(vec![TxnOp::get(lock_key.clone(), None)]);
                        let resp = kv.txn(txn).await.map_err(|e| self.failure(&e, &url))?;
                        let revision = header_revision(resp.header(), &url)?;
                        let got = first_get(&resp);
                        if resp.succeeded() {
                            return Ok((revision, got.map_or(0, |kv| kv.mod_revision())));
                        }
                        *lock_ignoring_poison(seen) = got.map_or(0, |kv| kv.mod_revision());
                    }
                    Err(AttemptError::Retry(Failure::transient(format!(
                        "the lock key kept changing during {CAS_ROUNDS} tries at {url}"
                    ))))
                }
            })
            .await?;
        self.remember_tower_rev(identity, tower_rev);
        tracing::info!(
            identity = %identity,
            instance_id = %owner.instance_id,
            revision,
            reason = %owner.reason,
            "acquired the tower lock in etcd (fencing token = revision {revision})"
        );
        Ok(Lease::new(*identity, owner, revision))
    }

    async fn store(&self, lease: &Lease, tower: &SavedTower) -> Result<StoreReceipt, StorageError> {
        check_tower_identity(lease, tower)?;
        let prefix = &self.inner.config.prefix;
        let identity = lease.identity();
        let lock_key = keys::lock(prefix, &identity);
        let tower_key = keys::tower(prefix, &identity);
        let bytes = tower.to_bytes();
        let owner_bytes = lease.owner_bytes().to_vec();
        let ours = lease.revision();
        // Besides the fence (the lock is still exactly ours), each write is guarded by the
        // tower key's mod_revision as last seen: a store attempt whose answer was lost can
        // then never apply later over a newer tower (a vote must not vanish from storage).
        // If only that guard fails, the tower was written behind our back (by a late
        // attempt of ours, or by hand): learn its revision and write again.
        let seen = Mutex::new(self.known_tower_rev(&identity));
        let revision = self
            .call_at("store", |mut kv, url| {
                let (seen, lock_key, tower_key, bytes, owner_bytes) =
                    (&seen, &lock_key, &tower_key, &bytes, &owner_bytes);
                async move {
                    for _ in 0..CAS_ROUNDS {
                        let expected = *lock_ignoring_poison(seen);
                        let txn = Txn::new()
                            .when(vec![
                                Compare::mod_revision(lock_key.clone(), CompareOp::Equal, ours),
                                Compare::value(
                                    lock_key.clone(),
                                    CompareOp::Equal,
                                    owner_bytes.clone(),
                                ),
                                Compare::mod_revision(
                                    tower_key.clone(),
                                    CompareOp::Equal,
                                    expected,
                                ),
                            ])
                            .and_then(vec![TxnOp::put(tower_key.clone(), bytes.clone(), None)])
                            .or_else(vec![
                                TxnOp::get(lock_key.clone(), None),
                                TxnOp::get(tower_key.clone(), None),
                            ]);
                        let resp = kv.txn(txn).await.map_err(|e| self.failure(&e, &url))?;
                        let revision = header_revision(resp.header(), &url)?;
                        if resp.succeeded() {
                            return Ok(revision);
                        }
                        let gets = get_responses(&resp);
                        let lock = gets.first().and_then(|g| g.kvs().first());
                        let still_ours = lock.is_some_and(|kv| {
                            kv.mod_revision() == ours && kv.value() == owner_bytes.as_slice()
                        });
                        if !still_ours {
                            return Err(AttemptError::Final(
                                LockLost {
                                    identity,
                                    ours,
                                    holder: lock.and_then(record_of),
                                }
                                .into(),
                            ));
                        }
                        let tower_rev = gets
                            .get(1)
                            .and_then(|g| g.kvs().first())
                            .map_or(0, |kv| kv.mod_revision());
                        *lock_ignoring_poison(seen) = tower_rev;
                    }
                    Err(AttemptError::Retry(Failure::transient(format!(
                        "the tower key kept changing during {CAS_ROUNDS} tries at {url}"
                    ))))
                }
            })
            .await?;
        self.remember_tower_rev(&identity, revision);
        self.after_store(revision);
        Ok(StoreReceipt::new(lease, &bytes, revision))
    }

    async fn load(&self, identity: &Pubkey) -> Result<Option<SavedTower>, StorageError> {
        let key = keys::tower(&self.inner.config.prefix, identity);
        let value = self
            .call_at("load", |mut kv, url| {
                let key = key.clone();
                async move {
                    let resp = kv
                        .get(key, None)
                        .await
                        .map_err(|e| self.failure(&e, &url))?;
                    Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
                }
            })
            .await?;
        match value {
            None => Ok(None),
            Some(bytes) => Ok(Some(SavedTower::from_bytes(&bytes)?)),
        }
    }

    async fn release(&self, lease: &Lease, reason: &str) -> Result<Revision, StorageError> {
        let record = LockOwner::ending(lease, LockEvent::Released, reason);
        let revision = self.fenced_record(lease, record, true).await?;
        tracing::info!(identity = %lease.identity(), lease_revision = lease.revision(), revision,
            reason, "released the tower lock in etcd");
        Ok(revision)
    }

    async fn record_finished(&self, lease: &Lease, reason: &str) -> Result<Revision, StorageError> {
        let record = LockOwner::ending(lease, LockEvent::Finished, reason);
        self.fenced_record(lease, record, false).await
    }

    async fn lock_holder(&self, identity: &Pubkey) -> Result<Option<LockRecord>, StorageError> {
        let key = keys::lock(&self.inner.config.prefix, identity);
        self.call_at("lock_holder", |mut kv, url| {
            let key = key.clone();
            async move {
                let resp = kv
                    .get(key, None)
                    .await
                    .map_err(|e| self.failure(&e, &url))?;
                Ok(resp.kvs().first().and_then(record_of))
            }
        })
        .await
    }

    async fn history(&self, identity: &Pubkey) -> Result<Vec<LockRecord>, StorageError> {
        let dir = keys::audit_dir(&self.inner.config.prefix, identity);
        let mut records = self
            .call_at("history", |mut kv, url| {
                let dir = dir.clone();
                async move {
                    let resp = kv
                        .get(dir, Some(GetOptions::new().with_prefix()))
                        .await
                        .map_err(|e| self.failure(&e, &url))?;
                    Ok(resp.kvs().iter().filter_map(record_of).collect::<Vec<_>>())
                }
            })
            .await?;
        records.sort_by_key(|r| r.revision);
        Ok(records)
    }
}

/// At start-up, a connection the server drops right after the TLS handshake is, with TLS
/// 1.3, how etcd usually answers a client certificate it does not accept (the alert can
/// be lost when it closes the socket). Say so, rather than "broken pipe".
fn at_connect(f: Failure, url: &str, names: &diagnose::TlsNames) -> Failure {
    let lower = f.detail.to_ascii_lowercase();
    let dropped = lower.contains("broken pipe")
        || lower.contains("connection reset")
        || lower.contains("unexpected eof")
        || lower.contains("peer closed connection")
        || lower.contains("connection closed");
    if !matches!(f.kind, Kind::Transient) || !dropped {
        return f;
    }
    Failure {
        kind: Kind::Tls,
        detail: format!(
            "the etcd server at {url} closed the connection right after the TLS handshake: it \
             most likely rejected the client certificate {} (--etcd-cert-file): is \
             validator.pem signed by the CA etcd trusts (--trusted-ca-file)? is it expired? ({})",
            names.cert_file.display(),
            f.detail
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_https() {
        assert_eq!(
            endpoint_url("127.0.0.1:2379").unwrap(),
            "https://127.0.0.1:2379"
        );
        assert_eq!(
            endpoint_url(" https://etcd:2379/ ").unwrap(),
            "https://etcd:2379"
        );
        for bad in ["", "http://etcd:2379", "unix://x", "etcd:2379/v3"] {
            let err = endpoint_url(bad).unwrap_err();
            assert!(matches!(err, StorageError::Config(_)), "{bad}: {err}");
        }
    }
}
