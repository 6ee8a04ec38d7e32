//! A small metrics registry rendered in Prometheus' text exposition format (0.0.4).
//!
//! Not global: the daemon creates one [`Metrics`], shares it as `Arc<Metrics>` with the
//! parts that update it, and the RPC server renders it at `GET /metrics`. Every labelled
//! family has a bounded number of series so a flood of odd inputs cannot grow memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Sets from an unsigned value (slots), saturating at `i64::MAX`.
    pub fn set_u64(&self, v: u64) {
        self.set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Most series one labelled family keeps; further label values are counted under
/// `"other"`.
pub const MAX_SERIES_PER_FAMILY: usize = 64;

/// Counters keyed by one label value.
#[derive(Debug, Default)]
pub struct CounterVec(Mutex<BTreeMap<String, u64>>);

impl CounterVec {
    pub fn inc(&self, label: &str) {
        self.add(label, 1);
    }
    pub fn add(&self, label: &str, n: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = if map.contains_key(label) || map.len() < MAX_SERIES_PER_FAMILY - 1 {
            label
        } else {
            "other"
        };
        *map.entry(key.to_string()).or_insert(0) += n;
    }
    pub fn get(&self, label: &str) -> u64 {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(label).copied().unwrap_or(0)
    }
    /// Sets a counter to a total kept elsewhere (e.g. the network's own atomics). The
    /// value only ever grows there, so the series stays monotonic.
    pub fn set(&self, label: &str, n: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(label) || map.len() < MAX_SERIES_PER_FAMILY - 1 {
            map.insert(label.to_string(), n);
        }
    }
    /// The sum over all label values.
    pub fn total(&self) -> u64 {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.values().sum()
    }
    fn snapshot(&self) -> Vec<(String, u64)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Upper bounds (seconds) of the latency histogram buckets: 0.25 ms to 10 s.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS_SECONDS`]).
#[derive(Debug)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last is +Inf.
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..=LATENCY_BUCKETS_SECONDS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
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
    pub slot_processed: Gauge,
    pub slot_confirmed: Gauge,
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
    identity: Mutex<String>,
    lock_state: Mutex<LockStateKind>,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            slot_processed: Gauge::default(),
            slot_confirmed: Gauge::default(),
            slot_finalized: Gauge::default(),
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
            identity: Mutex::new(String::new()),
            lock_state: Mutex::new(LockStateKind::Unknown),
            rpc_requests: CounterVec::default(),
            rpc_rejected: CounterVec::default(),
            packets_dropped: CounterVec::default(),
            admin_requests: CounterVec::default(),
            etcd_db_size_bytes: Gauge::default(),
            etcd_db_size_in_use_bytes: Gauge::default(),
            etcd_quota_bytes: Gauge::default(),
            etcd_alarm_nospace: Gauge::default(),
            etcd_compacted_revision: Gauge::default(),
            tls_client_cert_expiry_seconds: Gauge::default(),
            tls_ca_cert_expiry_seconds: Gauge::default(),
        }
    }

    /// Sets the identity shown as the label of `huione_identity_info`.
    pub fn set_identity(&self, identity: impl std::fmt::Display) {
        *self.identity.lock().unwrap_or_else(|e| e.into_inner()) = identity.to_string();
    }

    pub fn set_lock_state(&self, state: LockStateKind) {
        *self.lock_state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    pub fn lock_state(&self) -> LockStateKind {
        *self.lock_state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The whole registry in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "huione_slot",
            "gauge",
            "Newest slot per commitment level.",
        );
        for (c, g) in [
            ("processed", &self.slot_processed),
            ("confirmed", &self.slot_confirmed),
            ("finalized", &self.slot_finalized),
        ] {
            let _ = writeln!(out, "huione_slot{{commitment=\"{c}\"}} {}", g.get());
        }
        gauge(
            &mut out,
            "huione_last_vote_slot",
            "Slot of the newest vote this node sent.",
            &self.last_vote_slot,
        );
        gauge(
            &mut out,
            "huione_root_slot",
            "This node's tower root.",
            &self.root_slot,
        );
        histogram(
            &mut out,
            "huione_tower_store_latency_seconds",
            "Time to durably store the tower before a vote.",
            &self.tower_store_latency,
        );
        histogram(
            &mut out,
            "huione_vote_latency_seconds",
            "Time from receiving (or producing) a block to sending the vote on it.",
            &self.vote_latency,
        );
        gauge(
            &mut out,
            "huione_vote_latency_p50_microseconds",
            "Median vote latency over the recent votes.",
            &self.vote_latency_p50_us,
        );
        gauge(
            &mut out,
            "huione_vote_latency_p99_microseconds",
            "99th percentile vote latency over the recent votes.",
            &self.vote_latency_p99_us,
        );
        counter(
            &mut out,
            "huione_votes_withheld_total",
            "Votes not sent because the tower could not be stored.",
            &self.votes_withheld,
        );
        counter(
            &mut out,
            "huione_votes_sent_total",
            "Votes sent after their tower was stored.",
            &self.votes_sent,
        );
        family(
            &mut out,
            "huione_identity_info",
            "gauge",
            "The identity this node runs as (label).",
        );
        let identity = self
            .identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "huione_identity_info{{identity=\"{}\"}} 1",
            escape_label(&identity)
        );
        gauge(
            &mut out,
            "huione_primary",
            "1 while this node votes (primary), 0 on standby.",
            &self.primary,
        );
        family(
            &mut out,
            "huione_tower_lock_state",
            "gauge",
            "Tower lock state: 1 for the current state.",
        );
        let state = self.lock_state();
        for s in LockStateKind::ALL {
            let _ = writeln!(
                out,
                "huione_tower_lock_state{{state=\"{}\"}} {}",
                s.as_str(),
                u8::from(s == state)
            );
        }
        gauge(
            &mut out,
            "huione_tower_lock_revision",
            "Fencing token (lock key revision) while the lock is held.",
            &self.tower_lock_revision,
        );
        counter_vec(
            &mut out,
            "huione_rpc_requests_total",
            "RPC calls answered, by method.",
            "method",
            &self.rpc_requests,
        );
        counter_vec(
            &mut out,
            "huione_rpc_rejected_total",
            "RPC and admin requests rejected, by reason.",
            "reason",
            &self.rpc_rejected,
        );
        counter_vec(
            &mut out,
            "huione_packets_dropped_total",
            "Network packets dropped, by reason.",
            "reason",
            &self.packets_dropped,
        );
        counter_vec(
            &mut out,
            "huione_admin_requests_total",
            "Admin socket calls, by method.",
            "method",
            &self.admin_requests,
        );
        for (name, help, g) in [
            (
                "huione_etcd_db_size_bytes",
                "Size of etcd's database file (checked against its quota).",
                &self.etcd_db_size_bytes,
            ),
            (
                "huione_etcd_db_size_in_use_bytes",
                "Part of etcd's database in use (the rest is freed by etcdctl defrag).",
                &self.etcd_db_size_in_use_bytes,
            ),
            (
                "huione_etcd_quota_bytes",
                "etcd's --quota-backend-bytes (0: not reported, etcd before 3.6).",
                &self.etcd_quota_bytes,
            ),
            (
                "huione_etcd_alarm_nospace",
                "1 while etcd's NOSPACE alarm is raised (it refuses every write).",
                &self.etcd_alarm_nospace,
            ),
            (
                "huione_etcd_compacted_revision",
                "The revision this node last compacted etcd's history to.",
                &self.etcd_compacted_revision,
            ),
            (
                "huione_tls_client_cert_expiry_seconds",
                "Seconds until the etcd client certificate expires (negative: expired).",
                &self.tls_client_cert_expiry_seconds,
            ),
            (
                "huione_tls_ca_cert_expiry_seconds",
                "Seconds until the etcd CA certificate expires (negative: expired).",
                &self.tls_ca_cert_expiry_seconds,
            ),
        ] {
            gauge(&mut out, name, help, g);
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, g: &Gauge) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {}", g.get());
}

fn counter(out: &mut String, name: &str, help: &str, c: &Counter) {
    family(out, name, "counter", help);
    let _ = writeln!(out, "{name} {}", c.get());
}

fn counter_vec(out: &mut String, name: &str, help: &str, label: &str, c: &CounterVec) {
    family(out, name, "counter", help);
    for (value, n) in c.snapshot() {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape_label(&value));
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    family(out, name, "histogram", help);
    let mut cumulative = 0u64;
    for (i, bound) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += h.buckets[LATENCY_BUCKETS_SECONDS.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {cumulative}");
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

/// Checks that `text` is valid Prometheus text exposition (0.0.4): every line is a
/// `# HELP`/`# TYPE` line, a comment, or `name{labels} value`; every sample belongs to a
/// family declared by `# TYPE` before it. Returns the first problem with its line number.
pub fn check_exposition(text: &str) -> Result<(), String> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
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
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(format!("line {n}: bad type {kind:?}"));
                    }
                    if typed.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(format!("line {n}: {name} declared twice"));
                    }
                }
                (Some("HELP"), Some(name), _) if valid_name(name) => {}
                (Some("HELP" | "TYPE"), _, _) => return Err(format!("line {n}: bad {line:?}")),
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
        let family_ok = typed.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix).is_some_and(|base| {
                    typed
                        .get(base)
                        .is_some_and(|k| k == "histogram" || k == "summary")
                })
            });
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
        check_exposition(&text).unwrap();
    }

    #[test]
    fn label_families_are_bounded() {
        let c = CounterVec::default();
        for i in 0..1000 {
            c.inc(&format!("r{i}"));
        }
        assert_eq!(c.snapshot().len(), MAX_SERIES_PER_FAMILY);
        assert_eq!(c.total(), 1000);
    }

    #[test]
    fn checker_rejects_bad_lines() {
        assert!(check_exposition("# TYPE a gauge\na 1\n").is_ok());
        assert!(check_exposition("a 1\n").is_err());
        assert!(check_exposition("# TYPE a gauge\na{b=\"x} 1\n").is_err());
        assert!(check_exposition("# TYPE a gauge\na one\n").is_err());
        assert!(check_exposition("# TYPE 1a gauge\n").is_err());
        assert!(check_exposition("# TYPE a gauge\na{b=\"q\\\"\"} 1 1700000000\n").is_ok());
    }
}
