//! The validator process: a thin driver around `huione_core::Core`.
//!
//! One task owns the core. It feeds it time (a tick every few ms), network events,
//! store results and admin requests, and executes the commands the core returns:
//!
//! * `StoreTower` → a storage task writes the tower under our lease and reports back;
//!   only a successful write's receipt becomes `ticket.confirmed(receipt)` (this is the
//!   one place that calls it; the core checks the receipt is for this fence and these
//!   bytes), so the core releases the vote only after its tower is stored.
//! * `SendVote` → appended to the audit log, then broadcast.
//! * `BroadcastBlock` → audit log, ledger, broadcast.
//! * `Exit` → the process ends with a distinct exit code.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use huione_core::{
    Command, Core, CoreConfig, CoreError, Ed25519Verifier, ExitReason, LockAfterFailure,
    LockHolder, ScheduleCache, StorageAnswer, StorageCall, StorageOp, StorageProblem, StoreFailure,
    StoreReport, StoreTicket, Switched, TakeoverError, TakeoverEvent, TakeoverReason,
    TakeoverRequest,
};
use huione_keys::Pubkey;
use huione_net::{InstanceId, NetConfig, NetEvent, NetHandle, RepairRequest, Transport};
use huione_os::clock::now_ms;
use huione_rpc::{
    AdminError, AdminServer, AdminServerConfig, ContactInfo, LockState, LockStateKind, Metrics,
    MonitorStatus, NodeSnapshot, RestartWindowInfo, Role, RpcServer, RpcServerConfig,
    SetIdentityOutcome,
};
use huione_tower_storage::{AnyTowerStorage, Lease, LockOwner, StorageError, TowerStorage};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::admin::{AdminBridge, AdminRequest};
use crate::args::RunArgs;
use crate::config::{self, NodeConfig};
use crate::exit_code;
use crate::snapshot;
use crate::storage_watch::StorageWatch;
use crate::visibility::{self, Persisting, Visibility};
use huione_validator::ledger::{LedgerConfig, LedgerFiles};

const TICK: Duration = Duration::from_millis(10);
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);
const PERSIST_EVERY: Duration = Duration::from_millis(1000);
/// A restarted primary waits at most this long to catch up before reclaiming anyway.
const RECLAIM_CATCH_UP_LIMIT: Duration = Duration::from_secs(60);
/// Leases kept for takeovers (acquired or adopted) besides the one voted under.
const MAX_TAKEOVER_LEASES: usize = 8;
/// Unrecorded votes and blocks remembered (far more than the core keeps unsent).
const MAX_UNRECORDED: usize = 4096;

/// Our earlier unrecorded votes and blocks, (slot, hash), recorded while recording a
/// batch (out of the unrecorded sets once synced).
#[derive(Default)]
struct CatchUp {
    votes: Vec<(huione_core::Slot, huione_core::Hash)>,
    blocks: Vec<(huione_core::Slot, huione_core::Hash)>,
}

/// How often a node whose ledger cannot record tries again (its backlog, then a sync).
const RECORDING_RETRY: Duration = Duration::from_millis(100);

/// An episode of failing to record our votes and blocks.
struct RecordingFailure {
    since: Instant,
    /// The last error (for getHealth).
    error: String,
    next_try: Instant,
}

/// A takeover storage call's answer: (call, answer, the lease it produced).
type TakeoverAnswer = (u64, StorageAnswer, Option<Lease>);
/// How long isolation or unlanded votes must last before they are reported.
const ALONE_GRACE_MS: u64 = 5_000;
/// A node with entrypoints that sees no more than this share of the stake (itself
/// included) is isolated: the rest of the cluster, two thirds or more, is invisible to it.
const ISOLATED_AT_MOST_PERCENT: f64 = 100.0 / 3.0 + 0.01;
/// Votes sent this many slots past the newest one landed count as not landing.
const LANDING_MAX_LAG_SLOTS: u64 = 16;
/// Repeated warnings (isolated, waiting to reclaim, votes withheld) at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How long a node without --gossip-host waits for an entrypoint to echo its address.
const ENTRYPOINT_ECHO_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(ledger: PathBuf, args: RunArgs) -> anyhow::Result<u8> {
    let cfg = config::resolve(ledger, args)?;
    let _ledger_lock = lock_ledger(&cfg.ledger)?;
    let storage = cfg.args.storage.open(Some(cfg.ledger.clone())).await?;
    tracing::info!(storage = %storage.describe(), identity = %cfg.identity.pubkey(),
        vote_account = %cfg.vote_account, "starting huione-validator {}", snapshot::VERSION);
    let genesis = Arc::new(cfg.genesis.clone());
    let load_start = Instant::now();
    let ledger_cfg = LedgerConfig {
        limit_ledger_slots: cfg.args.limit_ledger_slots,
        snapshot_interval_slots: cfg.args.snapshot_interval_slots,
        ..LedgerConfig::default()
    };
    let (mut files, mut restored) = LedgerFiles::open(&cfg.ledger, ledger_cfg, genesis.hash)?;
    if let Some(peer) = &cfg.args.snapshot_from {
        if restored.snapshot.is_none() && restored.blocks.is_empty() {
            let peer_owned = peer.clone();
            let bytes = tokio::task::spawn_blocking(move || {
                huione_validator::ledger::fetch_snapshot(&peer_owned)
            })
            .await??;
            let snap = files.adopt_snapshot(&bytes).with_context(|| {
                format!("the snapshot from --snapshot-from {peer} cannot be used")
            })?;
            tracing::info!(peer = %peer, slot = snap.slot(), bytes = bytes.len(),
                "starting from the peer's snapshot instead of replaying from genesis");
            restored.snapshot = Some(snap);
        } else {
            tracing::info!(peer = %peer, "the ledger is not empty: --snapshot-from is not used");
        }
    }
    let snapshot_slot = restored.snapshot.as_ref().map(|s| s.slot());
    let resumed = restored.blocks.len();
    let started_ms = now_ms();
    let instance_id = huione_tower_storage::new_instance_id();

    let mut core_cfg = CoreConfig::new(
        &genesis,
        cfg.vote_account,
        cfg.authorized_voters.clone(),
        instance_id.clone(),
    );
    if cfg.args.tower_outage_exit_after_ms > 0 {
        core_cfg.max_store_outage_ms = Some(cfg.args.tower_outage_exit_after_ms);
    }
    if let Some(ms) = cfg.args.max_clock_offset_ms {
        core_cfg.max_clock_offset_ms = ms;
    }
    core_cfg.reclaim_catch_up_limit_ms = RECLAIM_CATCH_UP_LIMIT.as_millis() as u64;
    let core_cfg_max_clock_offset_ms = core_cfg.max_clock_offset_ms;
    let ledger_state = restored.into_core_ledger(&genesis);
    let core = Core::new(
        genesis.clone(),
        core_cfg,
        cfg.identity.clone(),
        Arc::new(Ed25519Verifier),
        ledger_state,
        now_ms(),
    );
    tracing::info!(blocks = resumed, snapshot = ?snapshot_slot, root = core.status().root,
        ms = load_start.elapsed().as_millis() as u64, "ledger loaded");

    let host = advertised_host(&cfg).await?;
    let advertised_rpc = huione_net::addressing::advertised_rpc(cfg.rpc_bind, host);
    let mut net_cfg = NetConfig::new(
        cfg.gossip_bind,
        cfg.identity.clone(),
        InstanceId {
            id: instance_id.clone(),
            started_ms,
        },
        genesis.hash,
        cfg.entrypoints.clone(),
    );
    net_cfg.advertised_gossip_addr = Some(SocketAddr::new(host, cfg.gossip_bind.port()));
    net_cfg.rpc_addr = advertised_rpc;
    let (transport, net_rx) = Transport::bind(net_cfg).await?;

    let metrics = Arc::new(Metrics::new());
    metrics.set_identity(cfg.identity.pubkey());
    metrics.set_lock_state(LockStateKind::NotHeld);
    let watch = StorageWatch::spawn(&storage, metrics.clone());
    let (snap_tx, snap_rx) = watch::channel(Arc::new(NodeSnapshot::empty(
        cfg.identity.pubkey(),
        snapshot::VERSION,
    )));
    let rpc_listener = tokio::net::TcpListener::bind(cfg.rpc_bind)
        .await
        .map_err(|e| rpc_bind_error(cfg.rpc_bind, e))?;
    let rpc = RpcServer::serve(
        rpc_listener,
        RpcServerConfig::default(),
        snap_rx,
        metrics.clone(),
    )?;
    let rpc_addr = rpc.local_addr();
    let (admin_tx, admin_rx) = mpsc::channel(16);
    let admin = AdminServer::start(
        &cfg.ledger,
        Arc::new(AdminBridge { tx: admin_tx }),
        metrics.clone(),
        AdminServerConfig::default(),
    )
    .await?;
    let gossip_addr = transport.contact_info().gossip_addr;
    tracing::info!(gossip_bind = %transport.local_addr(), gossip_advertised = %gossip_addr,
        rpc_bind = %rpc_addr, rpc_advertised = ?advertised_rpc,
        admin = %admin.path().display(), "listening");

    let (store_tx, store_rx) = mpsc::channel(4);
    let (takeover_tx, takeover_rx) = mpsc::channel(4);
    let mut node = Node {
        net: transport.handle(),
        storage,
        lease: None,
        takeover_leases: BTreeMap::new(),
        takeover_tx,
        admin_waiting: None,
        files,
        metrics,
        snap_tx,
        store_tx,
        schedule: ScheduleCache::default(),
        peer_ids: HashMap::new(),
        peer_addrs: HashMap::new(),
        repair_rr: 0,
        instance_id,
        started_ms,
        votes_sent: 0,
        exit: None,
        vote_account: cfg.vote_account,
        genesis: genesis.clone(),
        core,
        gossip_addr,
        rpc_addr: huione_net::addressing::local_reach(rpc_addr),
        block_seen: BTreeMap::new(),
        unrecorded_votes: BTreeMap::new(),
        recording_failure: None,
        unrecorded_blocks: BTreeSet::new(),
        vote_latencies: VecDeque::new(),
        store_failing_since: None,
        last_store_ok_ms: None,
        root_snapshot: None,
        watch,
        clock_warned: None,
        max_clock_offset_ms: core_cfg_max_clock_offset_ms,
        entrypoints: cfg.entrypoints.clone(),
        reclaim_min_visible_stake: cfg.args.reclaim_min_visible_stake,
        isolated: Persisting::new(ALONE_GRACE_MS),
        not_landing: Persisting::new(ALONE_GRACE_MS),
        last_warn: HashMap::new(),
    };
    // A full ledger disk is known before the node takes an identity, not at its first vote.
    if let Err(e) = node.files.check_writable() {
        node.recording_failed(format!("{e:#}"));
    }
    if cfg.is_vote_account_node {
        node.start_primary(&cfg).await?;
    }
    let code = node.run_loop(net_rx, store_rx, takeover_rx, admin_rx).await;
    admin.shutdown().await;
    rpc.shutdown().await;
    drop(transport);
    Ok(code)
}

struct Node {
    core: Core,
    genesis: Arc<huione_core::Genesis>,
    net: NetHandle,
    storage: AnyTowerStorage,
    /// The lease the core votes under.
    lease: Option<Lease>,
    /// Leases a takeover acquired (or adopted from the lock key), by revision, until the
    /// core switches under one of them.
    takeover_leases: BTreeMap<i64, Lease>,
    /// Answers of takeover storage calls, back to the loop.
    takeover_tx: mpsc::Sender<TakeoverAnswer>,
    /// The set-identity request waiting for its takeover's answer: (takeover id, reply).
    admin_waiting: Option<(u64, crate::admin::Reply<SetIdentityOutcome>)>,
    files: LedgerFiles,
    metrics: Arc<Metrics>,
    snap_tx: watch::Sender<Arc<NodeSnapshot>>,
    store_tx: mpsc::Sender<StoreReport>,
    schedule: ScheduleCache,
    peer_ids: HashMap<SocketAddr, u64>,
    peer_addrs: HashMap<u64, SocketAddr>,
    repair_rr: usize,
    instance_id: String,
    started_ms: u64,
    votes_sent: u64,
    exit: Option<u8>,
    vote_account: Pubkey,
    /// Our advertised gossip address.
    gossip_addr: SocketAddr,
    /// Where a process on this machine reaches our RPC (admin `contact-info`).
    rpc_addr: SocketAddr,
    /// When each recent slot's block was first seen (for vote latency).
    block_seen: BTreeMap<huione_core::Slot, Instant>,
    /// Our votes and blocks whose audit record could not be written (a full disk), so
    /// they were not sent: (slot, hash). The core still holds them (our votes go into our
    /// blocks, our blocks answer repair requests); they leave only once recorded.
    unrecorded_votes: BTreeMap<(huione_core::Slot, huione_core::Hash), huione_core::SignedVote>,
    unrecorded_blocks: BTreeSet<(huione_core::Slot, huione_core::Hash)>,
    /// Set while our votes and blocks cannot be recorded: the core is told
    /// (`Core::set_recording`), and neither votes nor leads until the backlog above is
    /// recorded again.
    recording_failure: Option<RecordingFailure>,
    /// Recent vote latencies in microseconds (bounded window for p50/p99).
    vote_latencies: VecDeque<u64>,
    /// Since when tower stores have been failing (votes withheld), for getHealth.
    store_failing_since: Option<Instant>,
    /// Wall-clock ms of the last confirmed tower store (`huioneStatus`).
    last_store_ok_ms: Option<u64>,
    /// The encoded snapshot of the current root, served to joining nodes, and its slot.
    root_snapshot: Option<(huione_core::Slot, Arc<Vec<u8>>)>,
    /// etcd's size and alarms, certificate expiry, and why stores fail (for getHealth).
    watch: StorageWatch,
    /// Last warning about our clock's offset from the cluster's (at most one a minute).
    clock_warned: Option<Instant>,
    max_clock_offset_ms: u64,
    entrypoints: Vec<SocketAddr>,
    /// `--reclaim-min-visible-stake`.
    reclaim_min_visible_stake: f64,
    /// Entrypoints configured but (almost) nobody visible in gossip.
    isolated: Persisting,
    /// Voting, but our votes do not land in the cluster's blocks.
    not_landing: Persisting,
    /// When each kind of repeated warning was last logged (bounded rate).
    last_warn: HashMap<&'static str, Instant>,
}

/// How often the clock-offset warning may repeat.
const CLOCK_WARN_EVERY: Duration = Duration::from_secs(60);

/// Slots remembered for vote latency, and latencies kept for the percentiles.
const LATENCY_SLOTS: usize = 1024;
const LATENCY_WINDOW: usize = 4096;

impl Node {
    fn block_seen(&mut self, slot: huione_core::Slot) {
        self.block_seen.entry(slot).or_insert_with(Instant::now);
        while self.block_seen.len() > LATENCY_SLOTS {
            self.block_seen.pop_first();
        }
    }

    fn vote_sent(&mut self, slot: huione_core::Slot) {
        let Some(seen) = self.block_seen.get(&slot) else {
            return;
        };
        let d = seen.elapsed();
        self.metrics.vote_latency.observe(d);
        if self.vote_latencies.len() == LATENCY_WINDOW {
            self.vote_latencies.pop_front();
        }
        self.vote_latencies.push_back(d.as_micros() as u64);
    }

    /// p50/p99 of the recent vote latencies, for /metrics (off the vote path).
    fn publish_vote_latency(&self) {
        if self.vote_latencies.is_empty() {
            return;
        }
        let mut sorted: Vec<u64> = self.vote_latencies.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        self.metrics.vote_latency_p50_us.set_u64(at(0.5));
        self.metrics.vote_latency_p99_us.set_u64(at(0.99));
    }

    /// The vote account's own node: take the lock now if nobody holds it (or when asked
    /// to reclaim immediately); otherwise reclaim once caught up with the cluster, so the
    /// standby keeps voting while we replay. A start-up takeover that fails is fatal.
    async fn start_primary(&mut self, cfg: &NodeConfig) -> anyhow::Result<()> {
        let id = cfg.identity.pubkey();
        let holder = self.storage.lock_holder(&id).await?;
        match holder {
            Some(h) if h.is_held() && !cfg.args.reclaim_immediately => {
                tracing::info!(holder = %h.owner.instance_id, host = %h.owner.host, revision = h.revision,
                    "the tower lock is held by another instance; reclaiming once caught up with the cluster");
                self.core.reclaim_when_caught_up(cfg.identity.clone());
            }
            _ => {
                let req = TakeoverRequest {
                    keypair: cfg.identity.clone(),
                    require_tower: false,
                    reason: TakeoverReason::Startup,
                };
                let (tid, cmds) = self
                    .core
                    .begin_takeover(req)
                    .map_err(|e| anyhow::anyhow!("cannot take the identity {id}: {e}"))?;
                // Run the takeover's calls here, in order, until it answers: the node
                // starts voting, or does not start.
                let mut pending = cmds;
                loop {
                    // Storage calls run here, inline; everything else as usual.
                    let (calls, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut pending)
                        .into_iter()
                        .partition(|c| matches!(c, Command::Storage(_)));
                    let mut calls: Vec<StorageCall> = calls
                        .into_iter()
                        .filter_map(|c| match c {
                            Command::Storage(c) => Some(c),
                            _ => None,
                        })
                        .collect();
                    let mut outcome = None;
                    for cmd in &rest {
                        match cmd {
                            Command::Takeover(TakeoverEvent::Switched(sw)) if sw.id == tid => {
                                outcome = Some(Ok(()))
                            }
                            Command::Takeover(TakeoverEvent::Failed {
                                id: f, error, lock, ..
                            }) if *f == tid && *lock != LockAfterFailure::Resolving => {
                                outcome = Some(Err(error.clone()))
                            }
                            _ => {}
                        }
                    }
                    self.execute(rest).await;
                    match outcome {
                        Some(Ok(())) => break,
                        Some(Err(e)) => {
                            anyhow::bail!(
                                "cannot take the identity {id}: {}",
                                admin_error(id, &self.storage.describe(), e)
                            )
                        }
                        None => {}
                    }
                    debug_assert!(calls.len() <= 1, "a takeover has one call outstanding");
                    let Some(call) = calls.pop() else {
                        // A retry is due later: the loop's ticks go on with it.
                        break;
                    };
                    let lease = self.lease_for(&call.op);
                    let (answer, lease) =
                        run_storage_call(&self.storage, &self.instance_id, call.op, lease).await;
                    self.keep_lease(lease);
                    pending = self.core.on_storage_answer(now_ms(), call.call, answer);
                }
            }
        }
        Ok(())
    }

    async fn run_loop(
        &mut self,
        mut net_rx: mpsc::Receiver<NetEvent>,
        mut store_rx: mpsc::Receiver<StoreReport>,
        mut takeover_rx: mpsc::Receiver<TakeoverAnswer>,
        mut admin_rx: mpsc::Receiver<AdminRequest>,
    ) -> u8 {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut last_snap, mut last_persist) = (Instant::now(), Instant::now());
        let mut sigterm = signal(SignalKind::terminate()).ok();
        let mut sigint = signal(SignalKind::interrupt()).ok();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.retry_recording();
                    let cmds = self.core.tick(now_ms());
                    self.execute(cmds).await;
                    self.gate_reclaim();
                    if last_snap.elapsed() >= SNAPSHOT_EVERY {
                        last_snap = Instant::now();
                        self.publish();
                    }
                    if last_persist.elapsed() >= PERSIST_EVERY {
                        last_persist = Instant::now();
                        self.persist_ledger();
                    }
                }
                Some(ev) = net_rx.recv() => self.on_net(ev).await,
                Some(report) = store_rx.recv() => {
                    if report.is_confirmed() {
                        self.store_failing_since = None;
                        self.last_store_ok_ms = Some(now_ms());
                    } else {
                        self.store_failing_since.get_or_insert_with(Instant::now);
                    }
                    let cmds = self.core.on_store_report(now_ms(), report);
                    self.execute(cmds).await;
                }
                Some((call, answer, lease)) = takeover_rx.recv() => {
                    self.keep_lease(lease);
                    let cmds = self.core.on_storage_answer(now_ms(), call, answer);
                    self.execute(cmds).await;
                }
                Some(req) = admin_rx.recv() => self.on_admin(req).await,
                _ = recv_signal(&mut sigterm) => {
                    tracing::info!("SIGTERM: exiting");
                    self.exit.get_or_insert(0);
                }
                _ = recv_signal(&mut sigint) => {
                    tracing::info!("SIGINT: exiting");
                    self.exit.get_or_insert(0);
                }
            }
            if let Some(code) = self.exit {
                self.persist_ledger();
                return code;
            }
        }
    }

    /// Stores new blocks (synced), and snapshots and prunes when the root has moved on.
    /// Our blocks not recorded in the audit log stay out of the store: after a restart,
    /// a stored block may be served to peers.
    fn persist_ledger(&mut self) {
        let written = self.persist_blocks();
        // A block store that cannot take writes is a ledger that cannot record: the node
        // stops voting and leading, and takes no identity, until it can (said once per
        // episode; blocks stay in memory and are written once it can).
        if let Err(e) = written {
            self.recording_failed(format!("{e:#}"));
        }
        let root = self.core.status().root;
        let Some(bank) = self.core.bank(root) else {
            return;
        };
        match self.files.maybe_snapshot(bank, self.core.rooted_chain()) {
            Ok(Some(path)) => {
                tracing::info!(root, file = %path.display(), "ledger snapshot written")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(root, error = %format!("{e:#}"), "cannot write a ledger snapshot")
            }
        }
        // The current root's snapshot, for `GET /ledger-snapshot` (a joining node).
        if root > 0 && self.root_snapshot.as_ref().is_none_or(|(s, _)| *s != root) {
            match huione_validator::ledger::snapshots::encode(
                self.genesis.hash,
                bank,
                self.core.rooted_chain(),
            ) {
                Ok(bytes) => self.root_snapshot = Some((root, Arc::new(bytes))),
                Err(e) => tracing::warn!(root, error = %e, "cannot encode the root snapshot"),
            }
        }
    }

    /// Writes the blocks the core holds that the block store lacks (not our unrecorded
    /// ones) and syncs the store.
    fn persist_blocks(&mut self) -> anyhow::Result<()> {
        let unrecorded = &self.unrecorded_blocks;
        self.files.persist(
            self.core
                .blocks()
                .filter(|b| !unrecorded.contains(&(b.slot, b.hash))),
        )?;
        self.files.sync_blocks()
    }

    /// Logs `what` under `key` unless it was logged less than [`WARN_EVERY`] ago.
    fn warn_limited(&mut self, key: &'static str) -> bool {
        let due = self
            .last_warn
            .get(key)
            .is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if due {
            self.last_warn.insert(key, Instant::now());
        }
        due
    }

    fn visibility(&self) -> Visibility {
        let peers = self.net.peers().into_iter().map(|p| p.identity);
        Visibility::compute(&self.genesis, self.core.identity(), peers)
    }

    /// While a reclaim waits, opens the core's gate only when [`visibility::may_reclaim`]
    /// sees enough of the cluster in gossip (the core itself waits for catch-up, or
    /// [`RECLAIM_CATCH_UP_LIMIT`]). Logs why it waits, at a bounded rate.
    fn gate_reclaim(&mut self) {
        if !self.core.reclaim_pending() {
            return;
        }
        let vis = self.visibility();
        let open = match visibility::may_reclaim(&vis, self.reclaim_min_visible_stake, true) {
            Ok(()) => true,
            Err(wait) => {
                if self.warn_limited("reclaim") {
                    tracing::warn!(entrypoints = ?self.entrypoints, advertised = %self.gossip_addr,
                        "not reclaiming the identity: {wait}");
                }
                false
            }
        };
        self.core.set_reclaim_gate(open);
    }

    /// Votes the tower rules keep back: counters by rule, the slot waited for, and a
    /// bounded-rate log line while it lasts.
    fn report_withheld(&mut self) {
        let st = self.core.stats();
        for (rule, n) in [
            ("lockout", st.locked_out),
            ("threshold", st.threshold_failed),
            ("switch", st.switch_failed),
            ("isolated", st.isolated_withheld),
            ("unrecordable", st.unrecordable_withheld),
        ] {
            self.metrics.votes_skipped.set(rule, n);
        }
        let voting = self.lease.is_some() && self.core.status().voting;
        let withheld = st.withheld.filter(|_| voting);
        self.metrics
            .vote_wait_slot
            .set_u64(withheld.map_or(0, |w| w.until_slot.unwrap_or(w.slot)));
        if let Some(w) = withheld {
            if self.warn_limited("withheld") {
                tracing::warn!(rule = w.rule.as_str(), slot = w.slot, until_slot = ?w.until_slot,
                    "not voting: {}", describe_withheld(w));
            }
        }
    }

    /// Isolation and unlanded votes: metrics, bounded-rate warnings, and the health
    /// getHealth reports.
    fn check_alone(&mut self, snap: &mut NodeSnapshot) {
        use huione_rpc::Health;
        let now = now_ms();
        let vis = self.visibility();
        self.metrics
            .cluster_visible_stake_percent
            .set(vis.percent().round() as i64);
        let alone = !self.entrypoints.is_empty()
            && (vis.peers == 0 || !vis.at_least(ISOLATED_AT_MOST_PERCENT));
        let isolated = self.isolated.update(alone, now);
        self.metrics.isolated.set(i64::from(isolated));
        if isolated && self.warn_limited("isolated") {
            tracing::warn!(
                entrypoints = ?self.entrypoints,
                advertised = %self.gossip_addr,
                peers = vis.peers,
                visible_stake_percent = vis.percent(),
                "alone for {} s: this node sees {} peers holding {:.1}% of the stake in gossip. \
                 Check that the entrypoints {:?} run and reach this node at its advertised \
                 address {} (UDP); --gossip-host or --bind-address set it",
                self.isolated.held_ms(now) / 1000,
                vis.peers,
                vis.percent(),
                self.entrypoints,
                self.gossip_addr,
            );
        }
        let s = self.core.status();
        let voting = s.voting && self.lease.is_some();
        let landed = snap
            .vote_accounts
            .iter()
            .find(|a| a.vote_pubkey == self.vote_account)
            .map_or(0, |a| a.last_vote);
        let lagging = voting
            && visibility::votes_not_landing(s.last_voted_slot, landed, LANDING_MAX_LAG_SLOTS);
        let not_landing = self.not_landing.update(lagging, now);
        self.metrics.votes_not_landing.set(i64::from(not_landing));
        if not_landing && self.warn_limited("not_landing") {
            tracing::warn!(
                last_vote_sent = ?s.last_voted_slot,
                last_vote_landed = landed,
                advertised = %self.gossip_addr,
                "votes are not landing: sent up to slot {:?}, the cluster's blocks carry up to {landed}. \
                 Check that the leaders reach this node's advertised address",
                s.last_voted_slot,
            );
        }
        // Storage problems (set before this) say more; otherwise isolation, then votes
        // that do not land.
        if snap.health_reason.is_none() {
            let reason = if isolated {
                Some(format!(
                    "isolated: sees {} peers holding {:.1}% of the stake in gossip; \
                     entrypoints {:?}, advertised address {}",
                    vis.peers,
                    vis.percent(),
                    self.entrypoints,
                    self.gossip_addr
                ))
            } else if not_landing && snap.health == Health::Ok {
                Some(format!(
                    "votes not landing: sent up to slot {:?}, landed up to {landed}",
                    s.last_voted_slot
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                snap.health = Health::Unknown;
                snap.health_reason = Some(reason);
            }
        }
    }

    /// A takeover event: log it, answer the waiting set-identity, and on a switch install
    /// the lease and the gossip identity (before the switch's store runs).
    fn on_takeover(&mut self, ev: TakeoverEvent) {
        match ev {
            TakeoverEvent::Started {
                reason,
                identity,
                caught_up,
                ..
            } => {
                if reason == TakeoverReason::Reclaim {
                    if !caught_up {
                        tracing::warn!(
                            "not caught up after {} s; reclaiming the identity anyway",
                            RECLAIM_CATCH_UP_LIMIT.as_secs()
                        );
                    }
                    let vis = self.visibility();
                    tracing::info!(identity = %identity, visible_stake_percent = vis.percent(), peers = vis.peers,
                        "reclaiming the identity: the cluster is visible and this node has caught up");
                }
            }
            TakeoverEvent::Switched(sw) => self.on_switched(sw),
            TakeoverEvent::Failed {
                id,
                reason,
                identity,
                error,
                lock,
            } => {
                let lock_note = match lock {
                    LockAfterFailure::NotTaken => "the lock was not taken",
                    LockAfterFailure::Resolving => {
                        "checking the lock holder: will finish the switch or give the lock up"
                    }
                    LockAfterFailure::Releasing => "giving the lock up (fenced release)",
                };
                tracing::warn!(identity = %identity, reason = reason.as_str(), error = %error,
                    "{} failed: {error}; {lock_note}", reason.as_str());
                if lock == LockAfterFailure::Releasing {
                    self.metrics.set_lock_state(LockStateKind::NotHeld);
                }
                let e = admin_error(identity, &self.storage.describe(), error);
                self.reply_admin(id, Err(e));
            }
            TakeoverEvent::Released {
                identity,
                revision,
                detail,
                already_gone,
                ..
            } => {
                self.takeover_leases.remove(&revision);
                if already_gone {
                    tracing::warn!(identity = %identity, revision,
                        "the takeover did not finish ({detail}); the lock had already been taken by another instance");
                } else {
                    tracing::warn!(identity = %identity, revision,
                        "the takeover did not finish ({detail}); released the tower lock (see `huione-tower history`)");
                }
            }
            TakeoverEvent::Finished {
                identity,
                revision,
                recorded,
                ..
            } => match recorded {
                Ok(()) => tracing::info!(identity = %identity, revision,
                    "takeover finished: recorded in the lock history"),
                Err(e) => tracing::warn!(identity = %identity, revision, error = %e,
                    "takeover finished, but the lock history could not record it"),
            },
        }
    }

    fn on_switched(&mut self, sw: Switched) {
        let Some(lease) = self.takeover_leases.remove(&sw.revision) else {
            // The core switched under a revision this driver never got a lease for: its
            // first store will report the lock lost.
            tracing::error!(
                revision = sw.revision,
                "switched without a lease for the revision"
            );
            return;
        };
        tracing::info!(identity = %sw.identity, previous = %sw.previous, revision = sw.revision,
            reason = sw.reason.as_str(), adopted = sw.adopted,
            "took the identity: votes as {} under tower lock revision {}{}", sw.identity, sw.revision,
            if sw.adopted { " (the acquire's answer was lost; found it in the lock key and finished the switch)" } else { "" });
        self.metrics.set_identity(sw.identity);
        self.metrics.set_lock_state(LockStateKind::Held);
        self.metrics.tower_lock_revision.set(sw.revision);
        self.metrics.primary.set(1);
        self.lease = Some(lease);
        self.takeover_leases.clear();
        let keypair = self.core.identity_keypair().clone();
        if let Err(e) = self.net.set_identity(
            &keypair,
            InstanceId {
                id: self.instance_id.clone(),
                started_ms: self.started_ms,
            },
        ) {
            tracing::warn!(error = %e, "could not update the gossip identity");
        }
        let outcome = SetIdentityOutcome {
            previous_identity: sw.previous,
            identity: sw.identity,
            tower_loaded: sw.tower_loaded,
            tower_root: sw.tower_root,
            lock_revision: Some(sw.revision),
        };
        self.reply_admin(sw.id, Ok(outcome));
        // RPC (getIdentity) shows the new identity at once, not at the next snapshot.
        self.publish();
    }

    fn reply_admin(&mut self, id: u64, r: Result<SetIdentityOutcome, AdminError>) {
        if self.admin_waiting.as_ref().is_some_and(|(w, _)| *w == id) {
            let (_, reply) = self.admin_waiting.take().expect("checked above");
            let _ = reply.send(r);
        }
    }

    /// Runs one takeover storage call in the background; the answer (and a lease the
    /// call produced) goes back to the loop.
    fn storage_call(&mut self, call: StorageCall) {
        let storage = self.storage.clone();
        let instance_id = self.instance_id.clone();
        let tx = self.takeover_tx.clone();
        let lease = self.lease_for(&call.op);
        tokio::spawn(async move {
            let (answer, lease) = run_storage_call(&storage, &instance_id, call.op, lease).await;
            let _ = tx.send((call.call, answer, lease)).await;
        });
    }

    /// The lease a release or "finished" record is fenced by.
    fn lease_for(&self, op: &StorageOp) -> Option<Lease> {
        let fence = match op {
            StorageOp::Release { fence, .. } | StorageOp::RecordFinished { fence, .. } => fence,
            _ => return None,
        };
        self.lease
            .iter()
            .chain(self.takeover_leases.values())
            .find(|l| l.identity() == fence.identity && l.revision() == fence.revision)
            .cloned()
    }

    /// Keeps a lease a takeover call produced, for the switch (bounded).
    fn keep_lease(&mut self, lease: Option<Lease>) {
        if let Some(l) = lease {
            self.takeover_leases.insert(l.revision(), l);
            while self.takeover_leases.len() > MAX_TAKEOVER_LEASES {
                self.takeover_leases.pop_first();
            }
        }
    }

    /// Appends the audit records of the batch's votes and blocks and makes them durable
    /// with one sync, before any of them is sent; then stores the recorded blocks. Returns,
    /// per command, whether it may be sent (false: its record is not durable, so it is
    /// not sent, and is remembered as unrecorded). What a vote or block depends on that
    /// is still unrecorded (our block it votes for or builds on, our vote it carries) is
    /// recorded first, or it is not sent either.
    fn record_batch(&mut self, cmds: &[Command]) -> Vec<bool> {
        let now = now_ms();
        let mut up = CatchUp::default();
        let mut failure: Option<String> = None;
        let mut ok: Vec<bool> = cmds
            .iter()
            .map(|cmd| {
                let r = match cmd {
                    Command::SendVote(v) => {
                        let v = v.vote();
                        let r = self
                            .record_chain(v.slot, v.hash, now, &mut up)
                            .and_then(|()| self.files.record_vote(v, &self.instance_id, now));
                        if r.is_err() {
                            // Known now, for a block of this batch that carries it.
                            self.unrecorded_votes.insert((v.slot, v.hash), v.clone());
                        }
                        r
                    }
                    Command::BroadcastBlock(b) => {
                        let r = self
                            .record_chain(b.parent_slot, b.parent_hash, now, &mut up)
                            .and_then(|()| self.record_carried_votes(b, now, &mut up))
                            .and_then(|()| self.files.record_block(b, &self.instance_id, now));
                        if r.is_err() {
                            // Known now, for a vote of this batch on it.
                            self.unrecorded_blocks.insert((b.slot, b.hash));
                        }
                        r
                    }
                    _ => return true,
                };
                if let Err(e) = &r {
                    let e = format!("{e:#}");
                    tracing::error!(error = %e, "not sent: the audit log cannot be written");
                    failure.get_or_insert(e);
                }
                r.is_ok()
            })
            .collect();
        let has_record = cmds
            .iter()
            .any(|c| matches!(c, Command::SendVote(_) | Command::BroadcastBlock(_)));
        if !has_record {
            return ok;
        }
        let mut synced = self.files.sync_audit();
        // Only recorded blocks go to the block store: a block there may be served to
        // peers after a restart.
        let recorded_blocks: Vec<&huione_core::Block> = cmds
            .iter()
            .zip(&ok)
            .filter_map(|(c, ok)| match c {
                Command::BroadcastBlock(b) if *ok => Some(b),
                _ => None,
            })
            .collect();
        if synced.is_ok() && !recorded_blocks.is_empty() {
            // Recorded in the audit log, so they may leave; a block store that cannot take
            // them is a ledger that cannot record (as in `persist_ledger`), and the next
            // persist writes them once it can.
            if let Err(e) = self.files.persist(recorded_blocks) {
                failure.get_or_insert(format!("{e:#}"));
            }
            synced = self.files.sync_blocks();
        }
        if let Err(e) = synced {
            let e = format!("{e:#}");
            tracing::error!(error = %e, "votes and blocks not sent: the audit log or block store cannot be synced");
            failure.get_or_insert(e);
            for (i, cmd) in cmds.iter().enumerate() {
                if matches!(cmd, Command::SendVote(_) | Command::BroadcastBlock(_)) {
                    ok[i] = false;
                }
            }
        } else {
            self.caught_up(up);
        }
        for (cmd, ok) in cmds.iter().zip(&ok) {
            match cmd {
                Command::SendVote(v) if !ok => {
                    let v = v.vote();
                    self.unrecorded_votes.insert((v.slot, v.hash), v.clone());
                }
                Command::BroadcastBlock(b) if !ok => {
                    self.unrecorded_blocks.insert((b.slot, b.hash));
                }
                Command::BroadcastBlock(b) => {
                    self.unrecorded_blocks.remove(&(b.slot, b.hash));
                }
                _ => {}
            }
        }
        while self.unrecorded_votes.len() > MAX_UNRECORDED {
            self.unrecorded_votes.pop_first();
        }
        while self.unrecorded_blocks.len() > MAX_UNRECORDED {
            self.unrecorded_blocks.pop_first();
        }
        if let Some(e) = failure {
            self.recording_failed(e);
        }
        ok
    }

    /// Records our unrecorded blocks from the oldest up to `(slot, hash)` (each after
    /// the unrecorded votes of ours it carries); nothing when that block is recorded.
    fn record_chain(
        &mut self,
        slot: huione_core::Slot,
        hash: huione_core::Hash,
        now: u64,
        up: &mut CatchUp,
    ) -> anyhow::Result<()> {
        let mut chain = Vec::new();
        let mut k = (slot, hash);
        while self.unrecorded_blocks.contains(&k) && !up.blocks.contains(&k) {
            let b = self
                .core
                .blocks()
                .find(|b| (b.slot, b.hash) == k)
                .cloned()
                .with_context(|| {
                    format!(
                        "our block {} has no audit record and is no longer held",
                        k.0
                    )
                })?;
            k = (b.parent_slot, b.parent_hash);
            chain.push(b);
        }
        for b in chain.iter().rev() {
            if up.blocks.contains(&(b.slot, b.hash)) {
                continue;
            }
            self.record_carried_votes(b, now, up)?;
            self.files.record_block(b, &self.instance_id, now)?;
            up.blocks.push((b.slot, b.hash));
        }
        Ok(())
    }

    /// Records the votes of ours that `b` carries whose own records could not be
    /// written (the core puts our votes in our blocks when it decides them).
    fn record_carried_votes(
        &mut self,
        b: &huione_core::Block,
        now: u64,
        up: &mut CatchUp,
    ) -> anyhow::Result<()> {
        for v in &b.votes {
            let k = (v.slot, v.hash);
            if v.vote_account == self.vote_account
                && self.unrecorded_votes.contains_key(&k)
                && !up.votes.contains(&k)
            {
                self.record_chain(v.slot, v.hash, now, up)?;
                self.files.record_vote(v, &self.instance_id, now)?;
                up.votes.push(k);
            }
        }
        Ok(())
    }

    /// Once synced: what `up` recorded is no longer unrecorded.
    fn caught_up(&mut self, up: CatchUp) {
        for k in up.votes {
            self.unrecorded_votes.remove(&k);
        }
        for k in up.blocks {
            self.unrecorded_blocks.remove(&k);
        }
    }

    /// A vote or block of ours could not be recorded (`error`): the first time in an
    /// episode, tell the core (it stops voting and leading), log it once naming the
    /// ledger, and report it (getHealth, `huione_recording_failed`).
    fn recording_failed(&mut self, error: String) {
        if let Some(f) = &mut self.recording_failure {
            f.error = error;
            return;
        }
        let ledger = self.files.dir().display().to_string();
        tracing::error!(ledger = %ledger, error = %error,
            "cannot record votes and blocks in the ledger {ledger}: {error}. Not voting and not \
             producing blocks until it can (free space on the ledger's disk); retrying every {} ms",
            RECORDING_RETRY.as_millis());
        let now = Instant::now();
        self.recording_failure = Some(RecordingFailure {
            since: now,
            error,
            next_try: now + RECORDING_RETRY,
        });
        self.core.set_recording(false);
        self.metrics.recording_failed.set(1);
    }

    /// While recording fails, every [`RECORDING_RETRY`]: records the backlog of unrecorded
    /// votes and blocks and syncs it. Once that works, recording works again: the core
    /// votes and leads from its next tick (this runs just before it).
    fn retry_recording(&mut self) {
        let Some(f) = &self.recording_failure else {
            return;
        };
        let now = Instant::now();
        if now < f.next_try {
            return;
        }
        let recorded = self.record_backlog().and_then(|recorded| {
            self.persist_blocks()?;
            self.files.check_writable()?;
            Ok(recorded)
        });
        match recorded {
            Ok(recorded) => {
                let f = self.recording_failure.take().expect("checked above");
                tracing::info!(ledger = %self.files.dir().display(), recorded,
                    "the ledger records again after {} ms ({recorded} earlier votes and blocks \
                     recorded): voting and leading resume",
                    f.since.elapsed().as_millis());
                self.core.set_recording(true);
                self.metrics.recording_failed.set(0);
            }
            Err(e) => {
                let f = self.recording_failure.as_mut().expect("checked above");
                f.error = format!("{e:#}");
                f.next_try = now + RECORDING_RETRY;
            }
        }
    }

    /// Records every unrecorded vote and block of ours, oldest first (a block after the
    /// votes of ours it carries, a vote after its block), and syncs the audit log.
    /// Returns how many records it wrote. What the core no longer holds is forgotten
    /// first: it can never leave any more (a block is sent for repair or built on, and a
    /// vote carried in our blocks, only while the core holds the block), so it needs no
    /// record. Records written before a failure stay unrecorded here and are written
    /// again on the next try (an identical record is not a second vote for the auditor).
    fn record_backlog(&mut self) -> anyhow::Result<usize> {
        let held: BTreeSet<(huione_core::Slot, huione_core::Hash)> = self
            .core
            .blocks()
            .map(|b| (b.slot, b.hash))
            .filter(|k| self.unrecorded_blocks.contains(k) || self.unrecorded_votes.contains_key(k))
            .collect();
        let before = self.unrecorded_blocks.len() + self.unrecorded_votes.len();
        self.unrecorded_blocks.retain(|k| held.contains(k));
        self.unrecorded_votes.retain(|k, _| held.contains(k));
        let forgotten = before - self.unrecorded_blocks.len() - self.unrecorded_votes.len();
        if forgotten > 0 {
            tracing::warn!(forgotten, "unrecorded votes and blocks no longer held: forgotten (they were never sent and cannot be any more)");
        }
        let now = now_ms();
        let mut up = CatchUp::default();
        let blocks: Vec<_> = self.unrecorded_blocks.iter().copied().collect();
        for (slot, hash) in blocks {
            self.record_chain(slot, hash, now, &mut up)?;
        }
        let votes: Vec<huione_core::SignedVote> = self.unrecorded_votes.values().cloned().collect();
        for v in votes {
            let k = (v.slot, v.hash);
            if up.votes.contains(&k) {
                continue;
            }
            self.record_chain(v.slot, v.hash, now, &mut up)?;
            self.files.record_vote(&v, &self.instance_id, now)?;
            up.votes.push(k);
        }
        self.files.sync_audit()?;
        let recorded = up.votes.len() + up.blocks.len();
        self.caught_up(up);
        Ok(recorded)
    }

    /// The blocks of a repair answer that may leave: each unrecorded block of ours (or
    /// block carrying an unrecorded vote of ours) is recorded first, or left out.
    fn recorded_for_repair(&mut self, blocks: Vec<huione_core::Block>) -> Vec<huione_core::Block> {
        if self.unrecorded_votes.is_empty() && self.unrecorded_blocks.is_empty() {
            return blocks;
        }
        let now = now_ms();
        let mut out = Vec::new();
        let mut needed = Vec::new();
        let mut up = CatchUp::default();
        for b in blocks {
            let needs = self.unrecorded_blocks.contains(&(b.slot, b.hash))
                || b.votes.iter().any(|v| {
                    v.vote_account == self.vote_account
                        && self.unrecorded_votes.contains_key(&(v.slot, v.hash))
                });
            if !needs {
                out.push(b);
                needed.push(false);
                continue;
            }
            let r = self
                .record_chain(b.slot, b.hash, now, &mut up)
                .and_then(|()| self.record_carried_votes(&b, now, &mut up));
            match r {
                Ok(()) => {
                    out.push(b);
                    needed.push(true);
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    tracing::error!(slot = b.slot, error = %e,
                        "block not sent for repair: its audit record cannot be written");
                    self.recording_failed(e);
                }
            }
        }
        if !up.votes.is_empty() || !up.blocks.is_empty() {
            if let Err(e) = self.files.sync_audit() {
                let e = format!("{e:#}");
                tracing::error!(error = %e, "blocks not sent for repair: the audit log cannot be synced");
                self.recording_failed(e);
                return out
                    .into_iter()
                    .zip(needed)
                    .filter(|(_, n)| !n)
                    .map(|(b, _)| b)
                    .collect();
            }
            self.caught_up(up);
        }
        out
    }

    async fn execute(&mut self, cmds: Vec<Command>) {
        let sendable = self.record_batch(&cmds);
        for (cmd, sendable) in cmds.into_iter().zip(sendable) {
            match cmd {
                Command::StoreTower(ticket) => self.store(ticket),
                Command::SendVote(v) => {
                    let vote = v.into_vote();
                    if !sendable {
                        tracing::error!(
                            slot = vote.slot,
                            "vote not sent: its audit record is not durable"
                        );
                        continue;
                    }
                    self.votes_sent += 1;
                    self.metrics.votes_sent.inc();
                    let _ = self.net.broadcast_vote(&vote).await;
                    self.metrics.last_vote_slot.set_u64(vote.slot);
                    self.vote_sent(vote.slot);
                    tracing::debug!(slot = vote.slot, "vote sent");
                }
                Command::BroadcastBlock(block) => {
                    if !sendable {
                        tracing::error!(
                            slot = block.slot,
                            "block not sent: its audit record is not durable"
                        );
                        continue;
                    }
                    self.block_seen(block.slot);
                    tracing::debug!(
                        slot = block.slot,
                        votes = block.votes.len(),
                        "produced a block"
                    );
                    let _ = self.net.broadcast_block(&block).await;
                }
                Command::RequestRepair { slot, hash } => {
                    let peers = self.net.peers();
                    if peers.is_empty() {
                        continue;
                    }
                    self.repair_rr = self.repair_rr.wrapping_add(1);
                    let to = peers[self.repair_rr % peers.len()].gossip_addr;
                    let _ = self
                        .net
                        .send_repair_request(to, RepairRequest::Block { slot, hash })
                        .await;
                }
                Command::SendRepair { to, blocks } => {
                    let blocks = self.recorded_for_repair(blocks);
                    if blocks.is_empty() {
                        continue;
                    }
                    if let Some(addr) = self.peer_addrs.get(&to).copied() {
                        let _ = self.net.send_repair_response(addr, &blocks).await;
                    }
                }
                Command::Announce(a) => {
                    let _ = self.net.broadcast_announcement(&a).await;
                }
                Command::Exit(reason) => self.on_exit(reason),
                Command::Storage(call) => self.storage_call(call),
                Command::Takeover(ev) => self.on_takeover(ev),
            }
        }
    }

    /// Runs one fenced store in the background and reports the outcome to the loop.
    fn store(&mut self, ticket: StoreTicket) {
        let fence = ticket.fence();
        let lease = match &self.lease {
            Some(l) if l.identity() == fence.identity && l.revision() == fence.revision => {
                l.clone()
            }
            _ => {
                let report = ticket.failed(StoreFailure::LockLost(format!(
                    "no lease for {} at revision {}",
                    fence.identity, fence.revision
                )));
                let _ = self.store_tx.try_send(report);
                return;
            }
        };
        let storage = self.storage.clone();
        let tx = self.store_tx.clone();
        let metrics = self.metrics.clone();
        let watch = self.watch.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let result = storage.store(&lease, ticket.tower()).await;
            metrics.tower_store_latency.observe(start.elapsed());
            let report = match result {
                // The one place a ticket is confirmed: with the receipt of a successful
                // fenced write (the core checks it is for this fence and these bytes).
                Ok(receipt) => {
                    let report = ticket.confirmed(receipt);
                    match report.failure() {
                        None => watch.store_succeeded(),
                        Some(f) => {
                            metrics.votes_withheld.inc();
                            tracing::error!(failure = ?f, "tower store receipt rejected; vote withheld, will retry");
                        }
                    }
                    report
                }
                Err(e) => {
                    let failure = StoreFailure::from(problem(&e));
                    if let StoreFailure::Unavailable(_) = failure {
                        watch.store_failed(e.to_string());
                        metrics.votes_withheld.inc();
                        tracing::warn!(error = %e, "tower store failed; vote withheld, will retry");
                    }
                    ticket.failed(failure)
                }
            };
            let _ = tx.send(report).await;
        });
    }

    fn on_exit(&mut self, reason: ExitReason) {
        let code = match &reason {
            ExitReason::LockLost(_) => {
                self.metrics.set_lock_state(LockStateKind::Lost);
                exit_code::LOCK_LOST
            }
            ExitReason::DuplicateInstance { .. } => exit_code::DUPLICATE_INSTANCE,
            ExitReason::StorageOutage { .. } => exit_code::STORAGE_OUTAGE,
            ExitReason::Internal(_) => exit_code::ERROR,
        };
        tracing::error!("stopping: {reason}");
        eprintln!("huione-validator: stopping: {reason}");
        self.exit.get_or_insert(code);
    }

    async fn on_net(&mut self, ev: NetEvent) {
        let now = now_ms();
        let cmds = match ev {
            NetEvent::Vote { vote, .. } => self.core.on_vote(now, vote),
            NetEvent::Block { block, .. } => {
                self.block_seen(block.slot);
                self.core.on_block(now, block)
            }
            NetEvent::RepairResponse { block, .. } => {
                self.block_seen(block.slot);
                self.core.on_blocks(now, vec![block])
            }
            NetEvent::RepairRequest { from, request } => match request {
                RepairRequest::Block { slot, hash } => {
                    let id = self.peer_id(from);
                    self.core.on_repair_request(id, slot, hash)
                }
                RepairRequest::HighestAfter { .. } => Vec::new(),
            },
            NetEvent::Announcement { announcement, .. } => {
                self.core.on_announcement(now, announcement)
            }
            NetEvent::DuplicateInstance(d) => {
                // The core decides with lock revisions (announcements); this is only seen
                // in gossip and logged.
                tracing::info!(identity = %d.identity, "another instance of this identity is in gossip");
                Vec::new()
            }
        };
        self.execute(cmds).await;
    }

    fn peer_id(&mut self, addr: SocketAddr) -> u64 {
        if let Some(id) = self.peer_ids.get(&addr) {
            return *id;
        }
        if self.peer_ids.len() >= 4096 {
            self.peer_ids.clear();
            self.peer_addrs.clear();
        }
        let id = self.peer_ids.len() as u64 + 1;
        self.peer_ids.insert(addr, id);
        self.peer_addrs.insert(id, addr);
        id
    }

    async fn on_admin(&mut self, req: AdminRequest) {
        match req {
            AdminRequest::Exit(reply) => {
                tracing::info!("exit requested over the admin socket");
                let _ = reply.send(Ok(()));
                self.exit.get_or_insert(0);
            }
            AdminRequest::ContactInfo(reply) => {
                let _ = reply.send(Ok(self.contact_info()));
            }
            AdminRequest::SetIdentity {
                keypair,
                require_tower,
                reply,
            } => {
                let identity = keypair.pubkey();
                let req = TakeoverRequest {
                    keypair,
                    require_tower,
                    reason: TakeoverReason::SetIdentity,
                };
                match self.core.begin_takeover(req) {
                    Ok((id, cmds)) => {
                        if let Some((_, earlier)) = self.admin_waiting.replace((id, reply)) {
                            let _ = earlier.send(Err(AdminError::Busy {
                                reason: "superseded by a later set-identity".into(),
                            }));
                        }
                        self.execute(cmds).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "set-identity failed");
                        let e = match e {
                            CoreError::TakeoverInProgress(_) | CoreError::CannotRecord => {
                                AdminError::Busy {
                                    reason: e.to_string(),
                                }
                            }
                            e => AdminError::LockNotAcquired {
                                identity,
                                reason: format!("not taking the lock: {e}"),
                            },
                        };
                        let _ = reply.send(Err(e));
                    }
                }
            }
            AdminRequest::AddVoter(keypair, reply) => {
                tracing::info!(voter = %keypair.pubkey(), "authorized voter added (used from the next set-identity)");
                self.core.add_authorized_voter(keypair);
                let _ = reply.send(Ok(()));
            }
            AdminRequest::RemoveVoters(reply) => {
                tracing::info!("authorized voters removed, except the identity");
                self.core.remove_authorized_voters();
                let _ = reply.send(Ok(()));
            }
            AdminRequest::Status(reply) => {
                let _ = reply.send(Ok(self.monitor_status()));
            }
            AdminRequest::RestartWindow(identity, reply) => {
                let _ = reply.send(Ok(self.restart_window(identity)));
            }
        }
    }

    fn contact_info(&self) -> ContactInfo {
        ContactInfo {
            identity: self.core.identity(),
            gossip: Some(self.gossip_addr),
            tvu: None,
            tpu: None,
            tpu_vote: None,
            serve_repair: Some(self.gossip_addr),
            rpc: Some(self.rpc_addr),
            shred_version: 0,
            version: format!("huione {}", snapshot::VERSION),
            started_at_ms: self.started_ms,
        }
    }

    fn monitor_status(&self) -> MonitorStatus {
        let s = self.core.status();
        let held = self.lease.is_some() && s.voting;
        MonitorStatus {
            identity: s.identity,
            vote_account: self.vote_account,
            version: format!("huione {}", snapshot::VERSION),
            slot: s.best_slot,
            confirmed_slot: s.optimistic_slot,
            last_vote: s.last_voted_slot,
            root: Some(s.root),
            role: if held { Role::Primary } else { Role::Standby },
            tower_storage: self.storage.describe(),
            lock: LockState {
                state: self.metrics.lock_state(),
                revision: self.lease.as_ref().map(|l| l.revision()),
                holder: self.lease.as_ref().map(|l| l.owner().instance_id.clone()),
            },
            votes_withheld: self.metrics.votes_withheld.get(),
            started_at_ms: self.started_ms,
            vote_wait: self
                .core
                .stats()
                .withheld
                .filter(|_| held)
                .map(describe_withheld),
        }
    }

    fn restart_window(&mut self, identity: Option<Pubkey>) -> RestartWindowInfo {
        let now = now_ms();
        let current = self.genesis.slot_at(now);
        let id = identity.unwrap_or_else(|| self.core.identity());
        let window = (120_000 / self.genesis.slot_duration_ms).max(64);
        let best = self.core.status().best_slot;
        RestartWindowInfo {
            identity: id,
            current_slot: current,
            upcoming_leader_slots: snapshot::upcoming_leader_slots(
                &self.genesis,
                &mut self.schedule,
                &id,
                current,
                window,
            ),
            ms_per_slot: self.genesis.slot_duration_ms,
            caught_up: self.core.caught_up(now),
            slots_behind: Some(current.saturating_sub(best)),
            delinquent_stake_percent: snapshot::delinquent_stake_percent(&self.core, current),
        }
    }

    fn publish(&mut self) {
        let now = now_ms();
        let s = self.core.status();
        self.metrics.slot_processed.set_u64(s.best_slot);
        self.metrics.slot_confirmed.set_u64(s.optimistic_slot);
        self.metrics.slot_finalized.set_u64(s.root);
        self.metrics.root_slot.set_u64(s.root);
        self.publish_vote_latency();
        self.warn_about_clock(s.clock_offset_ms);
        self.metrics
            .clock_offset_ms
            .set(s.clock_offset_ms.unwrap_or(0));
        self.metrics
            .clock_offset_known
            .set(i64::from(s.clock_offset_ms.is_some()));
        self.metrics
            .leader_slots_fenced
            .set_u64(self.core.stats().leader_slots_fenced);
        // Dropped input, by reason: the network's decode/gossip drops and the core's
        // rejected blocks and votes.
        let net = self.net.stats().snapshot();
        for (reason, n) in &net.dropped {
            self.metrics.packets_dropped.set(reason.as_str(), *n);
        }
        let st = self.core.stats();
        for (reason, n) in [
            ("event_channel_full", net.events_dropped_channel_full),
            ("block_rejected", st.blocks_dropped),
            ("vote_rejected", st.votes_rejected),
            ("block_second_for_slot", st.duplicate_blocks_seen),
            ("gossip_vote_rejected", st.gossip_votes_dropped),
            ("announcement_rejected", st.announcements_dropped),
        ] {
            self.metrics.packets_dropped.set(reason, n);
        }
        // Every node in gossip, this one first, as Agave's getClusterNodes lists it; a
        // record of our identity from another instance is left to the duplicate check.
        let own = self.net.contact_info();
        let peers: Vec<_> = std::iter::once(own.clone())
            .chain(
                self.net
                    .peers()
                    .into_iter()
                    .filter(|p| p.identity != own.identity),
            )
            .collect();
        let mut snap = snapshot::build(snapshot::SnapshotInput {
            core: &self.core,
            genesis: &self.genesis,
            schedule: &mut self.schedule,
            peers: &peers,
            now_ms: now,
            blocks_sent_votes: self.votes_sent,
        });
        // Votes withheld because the tower cannot be stored: report unhealthy.
        if self.store_failing_since.is_some_and(|t| {
            t.elapsed() >= Duration::from_millis(self.genesis.slot_duration_ms * 2)
        }) {
            snap.health = huione_rpc::Health::Unknown;
            snap.health_reason = self.watch.reason();
        } else if let Some(problem) = self.watch.problem() {
            // etcd refuses every write (NOSPACE) or our certificate expired: neither this
            // node nor its standby can store a tower, even before a store fails.
            snap.health = huione_rpc::Health::Unknown;
            snap.health_reason = Some(problem);
        } else if let Some(f) = &self.recording_failure {
            // A full ledger disk: the node neither votes nor leads (a watchtower fails it
            // over, as it does a primary that reports itself unhealthy).
            snap.health = huione_rpc::Health::Unknown;
            snap.health_reason = Some(format!(
                "cannot record: votes and blocks cannot be written to the ledger {} for {} ms \
                 ({}); not voting or producing blocks until it can",
                self.files.dir().display(),
                f.since.elapsed().as_millis(),
                f.error
            ));
        }
        self.check_alone(&mut snap);
        self.report_withheld();
        snap.ledger_snapshot = self.root_snapshot.as_ref().map(|(_, b)| b.clone());
        snap.freshness = huione_rpc::Freshness {
            published_ms: now,
            peer_message_ms: self.net.stats().last_peer_message_ms(),
            tower_store_ms: self.last_store_ok_ms.filter(|_| self.lease.is_some()),
        };
        let _ = self.snap_tx.send(Arc::new(snap));
    }
}

/// "lockout: slot 6 waits for slot 8" and the like, for logs and `monitor`.
fn describe_withheld(w: huione_core::VoteWithheld) -> String {
    use huione_core::WithheldRule;
    match (w.rule, w.until_slot) {
        (WithheldRule::Lockout, Some(until)) => format!(
            "lockout: an earlier vote on another fork locks slot {} out until slot {until}",
            w.slot
        ),
        (WithheldRule::Lockout, None) => format!("lockout on slot {}", w.slot),
        (WithheldRule::Threshold, _) => format!(
            "threshold: the vote at depth 8 lacks 2/3 of the stake for slot {}",
            w.slot
        ),
        (WithheldRule::Switch, _) => format!(
            "switch: moving to slot {}'s fork needs 38% of the stake on other forks",
            w.slot
        ),
        (WithheldRule::Isolated, _) => format!(
            "isolated: no block or vote from any other validator recently; slot {} is voted \
             once one arrives (check this node's network: its votes would reach nobody)",
            w.slot
        ),
        (WithheldRule::Unrecordable, _) => format!(
            "unrecordable: the ledger cannot record votes and blocks (free space on its disk); \
             slot {} is voted once it can",
            w.slot
        ),
    }
}

/// The host to advertise in gossip: from the flags, or learned from an entrypoint's echo.
async fn advertised_host(cfg: &NodeConfig) -> anyhow::Result<std::net::IpAddr> {
    use huione_net::addressing::HostPlan;
    match cfg.gossip_host {
        HostPlan::Fixed(ip) => Ok(ip),
        HostPlan::LoopbackOnly(ip) => {
            tracing::warn!(advertised = %ip,
                "no --entrypoint and no --gossip-host: advertising {ip}, which only this machine \
                 can reach. For a cluster across machines set --gossip-host to this machine's \
                 address (or --bind-address to it)");
            Ok(ip)
        }
        HostPlan::FromEntrypoints => {
            let (ip, from) = huione_net::learn_own_address(
                cfg.gossip_bind.ip(),
                &cfg.entrypoints,
                ENTRYPOINT_ECHO_TIMEOUT,
            )
            .await?;
            tracing::info!(advertised = %ip, entrypoint = %from,
                "learned the address to advertise from the entrypoint (set --gossip-host to fix it)");
            Ok(ip)
        }
    }
}

/// A JSON-RPC bind failure, with the likely cause.
fn rpc_bind_error(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another process already uses port {} there: choose another --rpc-port or stop it",
            addr.port()
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine: set --rpc-bind-address (default: \
             --bind-address) to one of its addresses, 127.0.0.1 or 0.0.0.0",
            addr.ip()
        ),
        _ => "check --rpc-bind-address and --rpc-port".to_string(),
    };
    anyhow::anyhow!("cannot serve JSON-RPC on {addr}: {e}; {hint}")
}

impl Node {
    /// Says so, at a bounded rate, while our clock is too far from the cluster's to lead.
    fn warn_about_clock(&mut self, offset_ms: Option<i64>) {
        let Some(offset) = offset_ms.filter(|o| o.unsigned_abs() > self.max_clock_offset_ms) else {
            return;
        };
        if self
            .clock_warned
            .is_some_and(|t| t.elapsed() < CLOCK_WARN_EVERY)
        {
            return;
        }
        self.clock_warned = Some(Instant::now());
        let dir = if offset > 0 { "ahead of" } else { "behind" };
        tracing::warn!(
            offset_ms = offset,
            max_ms = self.max_clock_offset_ms,
            "this machine's clock runs {} ms {dir} the cluster's (measured from other \
             leaders' blocks): this node will not produce blocks until it is within {} ms; \
             check NTP (timedatectl, chronyc tracking)",
            offset.unsigned_abs(),
            self.max_clock_offset_ms
        );
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Two validators must never share a ledger directory.
fn lock_ledger(ledger: &Path) -> anyhow::Result<std::fs::File> {
    let path = ledger.join(".validator.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(_) => anyhow::bail!(
            "another huione-validator is running with --ledger {}; stop it first or use another ledger directory",
            ledger.display()
        ),
    }
}

/// A storage error as the core sees it: the one mapping, for stores and takeovers.
fn problem(e: &StorageError) -> StorageProblem {
    match e {
        StorageError::LockLost(_) => StorageProblem::LockLost(e.to_string()),
        StorageError::Tower(_) => StorageProblem::BadTower(e.to_string()),
        e if e.is_transient() => StorageProblem::Unavailable(e.to_string()),
        e => StorageProblem::Refused(e.to_string()),
    }
}

/// Runs one takeover storage call. Returns the answer and the lease it produced: an
/// acquire's, or this instance's own acquire found in the lock key (adopted). `lease` is
/// the one a release or "finished" record is fenced by.
async fn run_storage_call(
    storage: &AnyTowerStorage,
    instance_id: &str,
    op: StorageOp,
    lease: Option<Lease>,
) -> (StorageAnswer, Option<Lease>) {
    let no_lease = |fence: &huione_core::Fence| {
        StorageProblem::LockLost(format!(
            "no lease for {} at revision {}",
            fence.identity, fence.revision
        ))
    };
    match op {
        StorageOp::LoadTower { identity } => {
            let r = storage.load(&identity).await.map_err(|e| problem(&e));
            (StorageAnswer::Tower(r), None)
        }
        StorageOp::Acquire {
            identity,
            reason,
            sent_ms,
        } => {
            let owner = LockOwner {
                acquired_at_ms: sent_ms,
                ..LockOwner::new(identity, instance_id, reason.as_str())
            };
            tracing::info!(identity = %identity, reason = reason.as_str(),
                "taking the tower lock: acquire sent to {}", storage.describe());
            match storage.acquire(&identity, owner).await {
                Ok(l) => (StorageAnswer::Acquired(Ok(l.revision())), Some(l)),
                Err(e) => (StorageAnswer::Acquired(Err(problem(&e))), None),
            }
        }
        StorageOp::LockHolder { identity } => match storage.lock_holder(&identity).await {
            Ok(record) => {
                let lease = record
                    .as_ref()
                    .filter(|r| r.owner.instance_id == instance_id)
                    .and_then(Lease::adopt);
                let holder = record.map(|r| LockHolder {
                    held: r.is_held(),
                    instance_id: r.owner.instance_id,
                    acquired_at_ms: r.owner.acquired_at_ms,
                    revision: r.revision,
                });
                (StorageAnswer::Holder(Ok(holder)), lease)
            }
            Err(e) => (StorageAnswer::Holder(Err(problem(&e))), None),
        },
        StorageOp::Release { fence, reason } => {
            let r = match &lease {
                Some(l) => storage
                    .release(l, &reason)
                    .await
                    .map(|_| ())
                    .map_err(|e| problem(&e)),
                None => Err(no_lease(&fence)),
            };
            (StorageAnswer::Released(r), None)
        }
        StorageOp::RecordFinished { fence, reason } => {
            let r = match &lease {
                Some(l) => storage
                    .record_finished(l, &reason)
                    .await
                    .map(|_| ())
                    .map_err(|e| problem(&e)),
                None => Err(no_lease(&fence)),
            };
            (StorageAnswer::Recorded(r), None)
        }
    }
}

/// What `set-identity` answers for a takeover that did not switch.
fn admin_error(identity: Pubkey, storage: &str, e: TakeoverError) -> AdminError {
    match e {
        TakeoverError::Refused(_)
        | TakeoverError::AcquireRefused(_)
        | TakeoverError::AcquireUnanswered(_) => AdminError::LockNotAcquired {
            identity,
            reason: e.to_string(),
        },
        TakeoverError::TowerRequired(_) => AdminError::TowerRequired {
            identity,
            storage: storage.to_string(),
        },
        TakeoverError::TowerInvalid(reason) => AdminError::TowerInvalid { identity, reason },
        TakeoverError::StorageUnavailable(reason) => AdminError::StorageUnavailable { reason },
        TakeoverError::Switch(e) => AdminError::Internal {
            message: e.to_string(),
        },
    }
}
