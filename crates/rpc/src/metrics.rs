//! The validator's metrics, kept in a [`prometheus_client`] registry and rendered in the
//! OpenMetrics text format, which Prometheus scrapes natively.
//!
//! Not global: the daemon creates one [`Metrics`], shares it as `Arc<Metrics>` with the
//! parts that update it, and the RPC server renders it at `GET /metrics`. Every labelled
//! family has a bounded number of series so a flood of odd inputs cannot grow memory.
//!
//! Adding a metric: add a public field of one of the types below ([`Counter`], [`Gauge`],
//! [`CounterVec`], [`GaugeVec`], [`GaugeFamily`],
//! [`Histogram`], [`LabelGauge`]) to [`Metrics`], create it in
//! [`Metrics::new`] and register it there with [`register`]. A counter is registered
//! without its `_total` suffix (the encoder appends it), so `"huione_votes_sent"` is
//! exported as `huione_votes_sent_total`. Code elsewhere updates the field directly
//! (`metrics.root_slot.set_u64(root)`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder,
};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{counter, gauge, histogram, MetricType};
use prometheus_client::registry::Registry;

/// The `Content-Type` of a rendered registry (OpenMetrics 1.0 text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Registers `metric` under `name`: the registry keeps a handle that shares its value
/// with `metric`. (`prometheus-client` ends the help text with a period itself.)
pub fn register<M>(registry: &mut Registry, name: &str, help: &str, metric: &M)
where
    M: EncodeMetric + Clone + Send + Sync + std::fmt::Debug + 'static,
{
    registry.register(name, help.trim_end_matches('.'), metric.clone());
}

/// Renders a registry in the OpenMetrics text format (ending in `# EOF`).
pub fn render_registry(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail; the encoder only fails on its writer's errors.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// Forwards the encoding of a wrapper to the `prometheus-client` metric inside it.
macro_rules! forward_encode {
    ($t:ty) => {
        impl EncodeMetric for $t {
            fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
                self.0.encode(encoder)
            }
            fn metric_type(&self) -> MetricType {
                self.0.metric_type()
            }
        }
    };
}

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(counter::Counter);
forward_encode!(Counter);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(gauge::Gauge);
forward_encode!(Gauge);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.set(v);
    }
    /// Sets from an unsigned value (slots), saturating at `i64::MAX`.
    pub fn set_u64(&self, v: u64) {
        self.set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

/// Most series one labelled family keeps; further label values are counted under
/// `"other"`.
pub const MAX_SERIES_PER_FAMILY: usize = 64;

/// A label value, escaped as the text format requires (`prometheus-client` writes label
/// values verbatim).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelValue(pub String);

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&escape_label(&self.0))
    }
}

type OneLabel = [(&'static str, LabelValue); 1];
type Labels = Vec<(&'static str, LabelValue)>;

/// A family whose series count is bounded by [`MAX_SERIES_PER_FAMILY`]: once full, new
/// label values share the series whose every label is `"other"` (counters) or are
/// dropped (gauges, totals kept elsewhere).
#[derive(Clone, Debug)]
struct Bounded<M: EncodeMetric + Default + Clone + Send + Sync + std::fmt::Debug + 'static> {
    labels: Vec<&'static str>,
    family: Family<Labels, M>,
    /// The series created so far (handles sharing their values with the family's).
    index: Arc<Mutex<BTreeMap<Vec<String>, M>>>,
}

impl<M> Bounded<M>
where
    M: EncodeMetric + Default + Clone + Send + Sync + std::fmt::Debug + 'static,
{
    fn new(labels: &[&'static str]) -> Self {
        Bounded {
            labels: labels.to_vec(),
            family: Family::default(),
            index: Arc::default(),
        }
    }

    fn key(&self, values: &[&str]) -> Vec<String> {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "metric family with labels {:?} given values {values:?}",
            self.labels
        );
        values.iter().map(|v| v.to_string()).collect()
    }

    /// The series of `values`, created if there is room; when full, the `"other"` series
    /// with `overflow`, else `None`.
    fn series(&self, values: &[&str], overflow: bool) -> Option<M> {
        let key = self.key(values);
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = index.get(&key) {
            return Some(m.clone());
        }
        let key = if index.len() < MAX_SERIES_PER_FAMILY - 1 {
            key
        } else if overflow {
            vec!["other".to_string(); self.labels.len()]
        } else {
            return None;
        };
        let labels: Labels = self
            .labels
            .iter()
            .zip(&key)
            .map(|(l, v)| (*l, LabelValue(v.clone())))
            .collect();
        let m = index
            .entry(key)
            .or_insert_with(|| self.family.get_or_create_owned(&labels))
            .clone();
        Some(m)
    }

    fn get(&self, values: &[&str]) -> Option<M> {
        let key = self.key(values);
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.get(&key).cloned()
    }

    fn all(&self) -> Vec<(Vec<String>, M)> {
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Counters keyed by one label value.
#[derive(Clone, Debug)]
pub struct CounterVec(Bounded<counter::Counter>);

impl EncodeMetric for CounterVec {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.family.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

impl CounterVec {
    /// A family whose series are told apart by the label `label`.
    pub fn new(label: &'static str) -> Self {
        CounterVec(Bounded::new(&[label]))
    }
    pub fn inc(&self, label: &str) {
        self.add(label, 1);
    }
    pub fn add(&self, label: &str, n: u64) {
        if let Some(c) = self.0.series(&[label], true) {
            c.inc_by(n);
        }
    }
    pub fn get(&self, label: &str) -> u64 {
        self.0.get(&[label]).map_or(0, |c| c.get())
    }
    /// Sets a counter to a total kept elsewhere (e.g. the network's own atomics). The
    /// value only ever grows there, so the series stays monotonic. Dropped when the
    /// family is full (a total cannot be folded into `"other"`).
    pub fn set(&self, label: &str, n: u64) {
        if let Some(c) = self.0.series(&[label], false) {
            c.inner().store(n, Ordering::Relaxed);
        }
    }
    /// The sum over all label values.
    pub fn total(&self) -> u64 {
        self.0.all().iter().map(|(_, c)| c.get()).sum()
    }
    /// The series kept: `(label value, count)`, sorted by label value.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.0
            .all()
            .into_iter()
            .map(|(mut k, c)| (k.remove(0), c.get()))
            .collect()
    }
}

/// Gauges keyed by one label value (e.g. a file name).
#[derive(Clone, Debug)]
pub struct GaugeVec(Bounded<gauge::Gauge>);

impl EncodeMetric for GaugeVec {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.family.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

impl GaugeVec {
    /// A family whose series are told apart by the label `label`.
    pub fn new(label: &'static str) -> Self {
        GaugeVec(Bounded::new(&[label]))
    }
    /// Sets the series of `label` (dropped when the family is full).
    pub fn set(&self, label: &str, v: i64) {
        if let Some(g) = self.0.series(&[label], false) {
            g.set(v);
        }
    }
    pub fn get(&self, label: &str) -> Option<i64> {
        self.0.get(&[label]).map(|g| g.get())
    }
}

/// Gauges keyed by several labels (e.g. `file` and `kind`).
#[derive(Clone, Debug)]
pub struct GaugeFamily(Bounded<gauge::Gauge>);

impl EncodeMetric for GaugeFamily {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.family.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

impl GaugeFamily {
    /// A family whose series are told apart by the labels `labels`, in this order.
    pub fn new(labels: &[&'static str]) -> Self {
        GaugeFamily(Bounded::new(labels))
    }
    /// Sets the series of `values` (one per label, in order; dropped when the family is
    /// full). Panics if the number of values is not the number of labels.
    pub fn set(&self, values: &[&str], v: i64) {
        if let Some(g) = self.0.series(values, false) {
            g.set(v);
        }
    }
    pub fn get(&self, values: &[&str]) -> Option<i64> {
        self.0.get(values).map(|g| g.get())
    }
}

/// Upper bounds (seconds) of the latency histogram buckets: 0.25 ms to 10 s.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS_SECONDS`]).
/// (The second field counts observations: `prometheus-client` reads its own count only
/// when encoding.)
#[derive(Clone, Debug)]
pub struct Histogram(histogram::Histogram, Arc<AtomicU64>);
forward_encode!(Histogram);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(
            histogram::Histogram::new(LATENCY_BUCKETS_SECONDS.iter().copied()),
            Arc::default(),
        )
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
        self.1.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }
}

/// A gauge family that shows one current label value: either a single series
/// `name{label="<current>"} 1` (an "info" gauge such as the identity), or one series per
/// value of a fixed set, 1 for the current one and 0 for the others (a state set). Read
/// at each scrape from one value, so a scrape never sees two states at once.
#[derive(Clone, Debug)]
pub struct LabelGauge {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: Option<&'static [&'static str]>,
    current: Arc<Mutex<String>>,
}

impl LabelGauge {
    /// One series labelled with the current value.
    pub fn info(name: &'static str, help: &'static str, label: &'static str) -> Self {
        LabelGauge {
            name,
            help,
            label,
            values: None,
            current: Arc::default(),
        }
    }
    /// One series per value in `values`, 1 for the current one.
    pub fn state_set(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: &'static [&'static str],
    ) -> Self {
        LabelGauge {
            values: Some(values),
            ..Self::info(name, help, label)
        }
    }
    pub fn set(&self, value: impl std::fmt::Display) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = value.to_string();
    }
    pub fn get(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Adds this family to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }
}

impl prometheus_client::collector::Collector for LabelGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let current = self.get();
        let mut family =
            encoder.encode_descriptor(self.name, self.help, None, MetricType::Gauge)?;
        let series: Vec<(&str, i64)> = match self.values {
            None => vec![(current.as_str(), 1)],
            Some(values) => values
                .iter()
                .map(|v| (*v, i64::from(*v == current)))
                .collect(),
        };
        for (value, v) in series {
            let labels = [(self.label, LabelValue(value.to_string()))];
            ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The tower lock as the metrics (and `monitor`) show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockStateKind {
    /// This process holds the lock (it may store towers and vote).
    Held,
    /// This process does not hold the lock (standby).
    NotHeld,
    /// The lock was taken by another process; this one must stop voting.
    Lost,
    /// Storage has not answered yet.
    Unknown,
}

impl LockStateKind {
    pub const ALL: [LockStateKind; 4] = [
        LockStateKind::Held,
        LockStateKind::NotHeld,
        LockStateKind::Lost,
        LockStateKind::Unknown,
    ];
    const NAMES: &'static [&'static str] = &["held", "not_held", "lost", "unknown"];
    pub fn as_str(self) -> &'static str {
        match self {
            LockStateKind::Held => "held",
            LockStateKind::NotHeld => "not_held",
            LockStateKind::Lost => "lost",
            LockStateKind::Unknown => "unknown",
        }
    }
}

/// Every metric the validator exports. Fields are public: the daemon updates them
/// directly (`metrics.root_slot.set_u64(root)`).
#[derive(Debug)]
pub struct Metrics {
    /// `huione_slot{commitment="processed"}`.
    pub slot_processed: Gauge,
    /// `huione_slot{commitment="confirmed"}`.
    pub slot_confirmed: Gauge,
    /// `huione_slot{commitment="finalized"}`.
    pub slot_finalized: Gauge,
    pub last_vote_slot: Gauge,
    pub root_slot: Gauge,
    /// Time to store the tower (before each vote).
    pub tower_store_latency: Histogram,
    /// Block received (or produced) to vote sent, for the same slot.
    pub vote_latency: Histogram,
    /// Percentiles of the recent vote latencies, in microseconds (set by the daemon).
    pub vote_latency_p50_us: Gauge,
    pub vote_latency_p99_us: Gauge,
    /// Votes not sent because the tower could not be stored.
    pub votes_withheld: Counter,
    pub votes_sent: Counter,
    /// 1 while this node votes with the shared identity (primary), else 0.
    pub primary: Gauge,
    /// The fencing token (etcd revision of the lock key) while the lock is held.
    pub tower_lock_revision: Gauge,
    /// This machine's clock offset from the cluster's, in ms (positive: ahead), measured
    /// from other leaders' blocks; 0 until measured.
    pub clock_offset_ms: Gauge,
    pub clock_offset_known: Gauge,
    /// Leader slots of ours that we did not produce (fenced: floor, claim, clock, or no
    /// landed vote yet).
    pub leader_slots_fenced: Gauge,
    identity: LabelGauge,
    lock_state: LabelGauge,
    /// RPC calls answered, by method (unknown methods count as "unknown").
    pub rpc_requests: CounterVec,
    /// RPC and admin requests rejected, by reason.
    pub rpc_rejected: CounterVec,
    /// Network packets dropped, by reason (garbage, bad signature, wrong leader, ...).
    pub packets_dropped: CounterVec,
    /// Admin socket calls, by method.
    pub admin_requests: CounterVec,
    /// etcd's database file size, the part in use, its quota (0 = etcd does not report
    /// it), 1 while its NOSPACE alarm is raised, and the revision huione compacted it to.
    pub etcd_db_size_bytes: Gauge,
    pub etcd_db_size_in_use_bytes: Gauge,
    pub etcd_quota_bytes: Gauge,
    pub etcd_alarm_nospace: Gauge,
    pub etcd_compacted_revision: Gauge,
    /// Seconds until the TLS client certificate and the CA certificate the node loaded
    /// expire (negative once expired).
    pub tls_client_cert_expiry_seconds: Gauge,
    pub tls_ca_cert_expiry_seconds: Gauge,
    /// Share of the cluster's stake (ours included) whose nodes are in our gossip table.
    pub cluster_visible_stake_percent: Gauge,
    /// 1 while the node has entrypoints but sees too little stake in gossip.
    pub isolated: Gauge,
    /// 1 while the node votes but its votes do not land in the cluster's blocks.
    pub votes_not_landing: Gauge,
    /// 1 while the node cannot record its votes and blocks in its ledger (a full disk):
    /// it neither votes nor produces blocks.
    pub recording_failed: Gauge,
    /// Votes the tower rules kept back, by rule (lockout, threshold, switch, isolated,
    /// unrecordable).
    pub votes_skipped: CounterVec,
    /// While the tower rules keep the node from voting: the slot it waits for (0: none).
    pub vote_wait_slot: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let slot = Family::<OneLabel, gauge::Gauge>::default();
        let commitment =
            |c: &str| Gauge(slot.get_or_create_owned(&[("commitment", LabelValue(c.to_string()))]));
        let m = Metrics {
            slot_processed: commitment("processed"),
            slot_confirmed: commitment("confirmed"),
            slot_finalized: commitment("finalized"),
            last_vote_slot: Gauge::default(),
            root_slot: Gauge::default(),
            tower_store_latency: Histogram::default(),
            vote_latency: Histogram::default(),
            vote_latency_p50_us: Gauge::default(),
            vote_latency_p99_us: Gauge::default(),
            votes_withheld: Counter::default(),
            votes_sent: Counter::default(),
            primary: Gauge::default(),
            tower_lock_revision: Gauge::default(),
            clock_offset_ms: Gauge::default(),
            clock_offset_known: Gauge::default(),
            leader_slots_fenced: Gauge::default(),
            identity: LabelGauge::info(
                "huione_identity_info",
                "The identity this node runs as (label).",
                "identity",
            ),
            lock_state: LabelGauge::state_set(
                "huione_tower_lock_state",
                "Tower lock state: 1 for the current state.",
                "state",
                LockStateKind::NAMES,
            ),
            rpc_requests: CounterVec::new("method"),
            rpc_rejected: CounterVec::new("reason"),
            packets_dropped: CounterVec::new("reason"),
            admin_requests: CounterVec::new("method"),
            etcd_db_size_bytes: Gauge::default(),
            etcd_db_size_in_use_bytes: Gauge::default(),
            etcd_quota_bytes: Gauge::default(),
            etcd_alarm_nospace: Gauge::default(),
            etcd_compacted_revision: Gauge::default(),
            tls_client_cert_expiry_seconds: Gauge::default(),
            tls_ca_cert_expiry_seconds: Gauge::default(),
            cluster_visible_stake_percent: Gauge::default(),
            isolated: Gauge::default(),
            votes_not_landing: Gauge::default(),
            recording_failed: Gauge::default(),
            votes_skipped: CounterVec::new("rule"),
            vote_wait_slot: Gauge::default(),
            registry: Registry::default(),
        };
        m.lock_state.set(LockStateKind::Unknown.as_str());
        register(
            &mut r,
            "huione_slot",
            "Newest slot per commitment level.",
            &slot,
        );
        register(
            &mut r,
            "huione_last_vote_slot",
            "Slot of the newest vote this node sent.",
            &m.last_vote_slot,
        );
        register(
            &mut r,
            "huione_root_slot",
            "This node's tower root.",
            &m.root_slot,
        );
        register(
            &mut r,
            "huione_tower_store_latency_seconds",
            "Time to durably store the tower before a vote.",
            &m.tower_store_latency,
        );
        register(
            &mut r,
            "huione_vote_latency_seconds",
            "Time from receiving (or producing) a block to sending the vote on it.",
            &m.vote_latency,
        );
        register(
            &mut r,
            "huione_vote_latency_p50_microseconds",
            "Median vote latency over the recent votes.",
            &m.vote_latency_p50_us,
        );
        register(
            &mut r,
            "huione_vote_latency_p99_microseconds",
            "99th percentile vote latency over the recent votes.",
            &m.vote_latency_p99_us,
        );
        register(
            &mut r,
            "huione_votes_withheld",
            "Votes not sent because the tower could not be stored.",
            &m.votes_withheld,
        );
        register(
            &mut r,
            "huione_votes_sent",
            "Votes sent after their tower was stored.",
            &m.votes_sent,
        );
        m.identity.register(&mut r);
        register(
            &mut r,
            "huione_primary",
            "1 while this node votes (primary), 0 on standby.",
            &m.primary,
        );
        m.lock_state.register(&mut r);
        register(
            &mut r,
            "huione_tower_lock_revision",
            "Fencing token (lock key revision) while the lock is held.",
            &m.tower_lock_revision,
        );
        register(
            &mut r,
            "huione_clock_offset_ms",
            "This machine's clock offset from the cluster's in ms (positive: ahead), from other leaders' blocks; 0 while unknown (see huione_clock_offset_known).",
            &m.clock_offset_ms,
        );
        register(
            &mut r,
            "huione_clock_offset_known",
            "1 once enough recent blocks of other leaders measured the clock offset, 0 while it is unknown.",
            &m.clock_offset_known,
        );
        register(
            &mut r,
            "huione_leader_slots_fenced",
            "Leader slots of this node's identity it did not produce (takeover floor, no claim, clock off, no landed vote yet).",
            &m.leader_slots_fenced,
        );
        register(
            &mut r,
            "huione_rpc_requests",
            "RPC calls answered, by method.",
            &m.rpc_requests,
        );
        register(
            &mut r,
            "huione_rpc_rejected",
            "RPC and admin requests rejected, by reason.",
            &m.rpc_rejected,
        );
        register(
            &mut r,
            "huione_packets_dropped",
            "Network packets dropped, by reason.",
            &m.packets_dropped,
        );
        register(
            &mut r,
            "huione_admin_requests",
            "Admin socket calls, by method.",
            &m.admin_requests,
        );
        for (name, help, g) in [
            (
                "huione_etcd_db_size_bytes",
                "Size of etcd's database file (checked against its quota).",
                &m.etcd_db_size_bytes,
            ),
            (
                "huione_etcd_db_size_in_use_bytes",
                "Part of etcd's database in use (the rest is freed by etcdctl defrag).",
                &m.etcd_db_size_in_use_bytes,
            ),
            (
                "huione_etcd_quota_bytes",
                "etcd's --quota-backend-bytes (0: not reported, etcd before 3.6).",
                &m.etcd_quota_bytes,
            ),
            (
                "huione_etcd_alarm_nospace",
                "1 while etcd's NOSPACE alarm is raised (it refuses every write).",
                &m.etcd_alarm_nospace,
            ),
            (
                "huione_etcd_compacted_revision",
                "The revision this node last compacted etcd's history to.",
                &m.etcd_compacted_revision,
            ),
            (
                "huione_tls_client_cert_expiry_seconds",
                "Seconds until the etcd client certificate expires (negative: expired).",
                &m.tls_client_cert_expiry_seconds,
            ),
            (
                "huione_tls_ca_cert_expiry_seconds",
                "Seconds until the etcd CA certificate expires (negative: expired).",
                &m.tls_ca_cert_expiry_seconds,
            ),
        ] {
            register(&mut r, name, help, g);
        }
        register(
            &mut r,
            "huione_cluster_visible_stake_percent",
            "Share of the cluster's stake (ours included) whose nodes this node sees in gossip.",
            &m.cluster_visible_stake_percent,
        );
        register(
            &mut r,
            "huione_isolated",
            "1 while the node has entrypoints but sees too little of the cluster in gossip.",
            &m.isolated,
        );
        register(
            &mut r,
            "huione_votes_not_landing",
            "1 while the node votes but the cluster's blocks do not carry its votes.",
            &m.votes_not_landing,
        );
        register(
            &mut r,
            "huione_recording_failed",
            "1 while the node cannot record its votes and blocks in its ledger (e.g. a full disk): \
             it neither votes nor produces blocks.",
            &m.recording_failed,
        );
        register(
            &mut r,
            "huione_votes_skipped",
            "Votes kept back, by rule (lockout, threshold, switch, isolated, unrecordable).",
            &m.votes_skipped,
        );
        register(
            &mut r,
            "huione_vote_wait_slot",
            "While the tower rules keep the node from voting, the slot it waits for (0: voting).",
            &m.vote_wait_slot,
        );
        Metrics { registry: r, ..m }
    }

    /// Sets the identity shown as the label of `huione_identity_info`.
    pub fn set_identity(&self, identity: impl std::fmt::Display) {
        self.identity.set(identity);
    }

    pub fn set_lock_state(&self, state: LockStateKind) {
        self.lock_state.set(state.as_str());
    }

    pub fn lock_state(&self) -> LockStateKind {
        let s = self.lock_state.get();
        LockStateKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or(LockStateKind::Unknown)
    }

    /// The whole registry in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        render_registry(&self.registry)
    }
}

/// Something served at `GET /metrics`.
pub trait Exposition: Send + Sync + 'static {
    fn render(&self) -> String;
}

impl Exposition for Metrics {
    fn render(&self) -> String {
        Metrics::render(self)
    }
}

/// Serves `GET /metrics` (OpenMetrics text) over HTTP/1.1 with hyper on `listener` until
/// the task is dropped or aborted: the metrics server of a process that has no RPC port
/// (the watchtower). Other paths get 404, other methods 405. At most 16 connections at
/// once; each must send its request head within 5 s.
pub async fn serve_metrics<E: Exposition>(listener: tokio::net::TcpListener, metrics: Arc<E>) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::header::{HeaderValue, CONTENT_TYPE as CT};
    use hyper::{Method, Response, StatusCode};
    use hyper_util::rt::{TokioIo, TokioTimer};

    let permits = Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue; // dropped: too many connections at once
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let metrics = metrics.clone();
                async move {
                    let (status, ct, body) = match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => {
                            (StatusCode::OK, CONTENT_TYPE, metrics.render())
                        }
                        (&Method::GET, _) => (
                            StatusCode::NOT_FOUND,
                            "text/plain",
                            "not found: try GET /metrics\n".into(),
                        ),
                        _ => (
                            StatusCode::METHOD_NOT_ALLOWED,
                            "text/plain",
                            "only GET /metrics is served\n".into(),
                        ),
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    r.headers_mut().insert(CT, HeaderValue::from_static(ct));
                    Ok::<_, Infallible>(r)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .max_buf_size(16 * 1024);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            // Bounded in time so an idle keep-alive client cannot hold a permit forever.
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Checks that `text` is valid Prometheus text exposition (0.0.4 or OpenMetrics 1.0):
/// every line is a `# HELP`/`# TYPE`/`# UNIT` line, a comment, or `name{labels} value`;
/// every sample belongs to a family declared by `# TYPE` before it (a counter's samples
/// end in `_total` or `_created` in OpenMetrics); `# EOF`, when present, is the last line.
/// Returns the first problem with its line number.
pub fn check_exposition(text: &str) -> Result<(), String> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut eof = None;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if let Some(at) = eof {
            return Err(format!("line {n}: text after # EOF (line {at})"));
        }
        if line == "# EOF" {
            eof = Some(n);
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !valid_name(name) {
                        return Err(format!("line {n}: bad metric name {name:?}"));
                    }
                    let kinds = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "untyped",
                        "unknown",
                        "info",
                        "stateset",
                        "gaugehistogram",
                    ];
                    if !kinds.contains(&kind) {
                        return Err(format!("line {n}: bad type {kind:?}"));
                    }
                    if typed.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(format!("line {n}: {name} declared twice"));
                    }
                }
                (Some("HELP" | "UNIT"), Some(name), _) if valid_name(name) => {}
                (Some("HELP" | "TYPE" | "UNIT"), _, _) => {
                    return Err(format!("line {n}: bad {line:?}"))
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, after_name) = split_name(line);
        if !valid_name(name) {
            return Err(format!("line {n}: bad metric name in {line:?}"));
        }
        let rest = if let Some(labels) = after_name.strip_prefix('{') {
            parse_labels(labels).map_err(|e| format!("line {n}: {e} in {line:?}"))?
        } else {
            after_name
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .ok_or_else(|| format!("line {n}: no value in {line:?}"))?;
        if parse_value(value).is_none() {
            return Err(format!("line {n}: bad value {value:?}"));
        }
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("line {n}: bad timestamp {ts:?}"))?;
        }
        if fields.next().is_some() {
            return Err(format!("line {n}: trailing text in {line:?}"));
        }
        let of_kind = |suffixes: &[&str], kinds: &[&str]| {
            suffixes.iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .and_then(|base| typed.get(base))
                    .is_some_and(|k| kinds.contains(&k.as_str()))
            })
        };
        let family_ok = typed.contains_key(name)
            || of_kind(
                &["_bucket", "_sum", "_count", "_created", "_gcount", "_gsum"],
                &["histogram", "summary", "gaugehistogram"],
            )
            || of_kind(&["_total", "_created"], &["counter"])
            || of_kind(&["_info"], &["info"]);
        if !family_ok {
            return Err(format!("line {n}: sample {name} has no # TYPE before it"));
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn split_name(line: &str) -> (&str, &str) {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    line.split_at(end)
}

/// Parses `a="x",b="y"}` and returns what follows the closing brace.
fn parse_labels(mut s: &str) -> Result<&str, String> {
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let label = &s[..eq];
        let valid_label = {
            let mut c = label.chars();
            matches!(c.next(), Some(x) if x.is_ascii_alphabetic() || x == '_')
                && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        };
        if !valid_label {
            return Err(format!("bad label name {label:?}"));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut escaped = false;
        let mut end = None;
        for (i, ch) in s.char_indices() {
            match (escaped, ch) {
                (true, '\\' | '"' | 'n') => escaped = false,
                (true, _) => return Err("bad escape in label value".into()),
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, '\n') => return Err("newline in label value".into()),
                _ => {}
            }
        }
        let end = end.ok_or("unterminated label value")?;
        s = &s[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.tower_store_latency.observe(Duration::from_micros(100));
        m.tower_store_latency.observe(Duration::from_millis(3));
        m.tower_store_latency.observe(Duration::from_secs(60));
        let text = m.render();
        assert!(text.contains("huione_tower_store_latency_seconds_bucket{le=\"0.00025\"} 1"));
        assert!(text.contains("huione_tower_store_latency_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("huione_tower_store_latency_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("huione_tower_store_latency_seconds_count 3"));
        assert!(text.contains(
            "# HELP huione_tower_store_latency_seconds Time to durably store the tower before a vote.\n"
        ));
        check_exposition(&text).unwrap();
    }

    #[test]
    fn label_families_are_bounded() {
        let c = CounterVec::new("reason");
        for i in 0..1000 {
            c.inc(&format!("r{i}"));
        }
        assert_eq!(c.snapshot().len(), MAX_SERIES_PER_FAMILY);
        assert_eq!(c.total(), 1000);
        assert_eq!(c.get("other"), 1000 - (MAX_SERIES_PER_FAMILY as u64 - 1));
        // A total kept elsewhere is not folded into "other".
        c.set("r999", 5);
        assert_eq!(c.get("r999"), 0);
        let g = GaugeVec::new("file");
        for i in 0..100 {
            g.set(&format!("f{i}"), i);
        }
        assert_eq!(g.get("f3"), Some(3));
        assert_eq!(g.get("f99"), None);
        let f = GaugeFamily::new(&["file", "kind"]);
        f.set(&["/etc/huione/ca.pem", "ca"], 86_400);
        let mut r = Registry::default();
        register(&mut r, "huione_tls_cert_expiry_seconds", "Expiry.", &f);
        let text = render_registry(&r);
        assert!(
            text.contains(
                r#"huione_tls_cert_expiry_seconds{file="/etc/huione/ca.pem",kind="ca"} 86400"#
            ),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let c = CounterVec::new("method");
        c.inc("a\"b\\c\nd");
        let mut r = Registry::default();
        register(&mut r, "x", "X.", &c);
        let text = render_registry(&r);
        assert!(text.contains(r#"x_total{method="a\"b\\c\nd"} 1"#), "{text}");
        check_exposition(&text).unwrap();
    }

    #[test]
    fn one_lock_state_at_a_time() {
        let m = Metrics::new();
        assert_eq!(m.lock_state(), LockStateKind::Unknown);
        m.set_lock_state(LockStateKind::Lost);
        assert_eq!(m.lock_state(), LockStateKind::Lost);
        let text = m.render();
        let ones: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("huione_tower_lock_state{") && l.ends_with(" 1"))
            .collect();
        assert_eq!(ones, ["huione_tower_lock_state{state=\"lost\"} 1"]);
    }

    #[test]
    fn checker_rejects_bad_lines() {
        assert!(check_exposition("# TYPE a gauge\na 1\n").is_ok());
        assert!(check_exposition("a 1\n").is_err());
        assert!(check_exposition("# TYPE a gauge\na{b=\"x} 1\n").is_err());
        assert!(check_exposition("# TYPE a gauge\na one\n").is_err());
        assert!(check_exposition("# TYPE 1a gauge\n").is_err());
        assert!(check_exposition("# TYPE a gauge\na{b=\"q\\\"\"} 1 1700000000\n").is_ok());
        assert!(check_exposition("# TYPE a counter\na_total 1\n# EOF\n").is_ok());
        assert!(check_exposition("# TYPE a gauge\na_total 1\n").is_err());
        assert!(check_exposition("# TYPE a gauge\n# EOF\na 1\n").is_err());
    }
}
