//! The watchtower's metrics (a plain value shared as `Arc`, no globals) in Prometheus'
//! text format, and a tiny HTTP server for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use huione_rpc::metrics::escape_label;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Most label values one family keeps (labels come from a fixed set of names anyway).
const MAX_SERIES: usize = 32;

#[derive(Debug, Default)]
pub struct Metrics {
    pub checks: AtomicU64,
    /// Checks in which at least one signal failed.
    pub failed_checks: AtomicU64,
    /// Failing signals, by reason.
    failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Failovers triggered, by result (ok, error, dry_run, vetoed).
    failovers: Mutex<BTreeMap<&'static str, u64>>,
    pub consecutive_failures: AtomicI64,
    /// 1 while armed (primary seen healthy, no open incident).
    pub armed: AtomicI64,
    /// Primary vote account lag in slots as the cluster sees it (-1: unknown).
    pub vote_lag_slots: AtomicI64,
    pub last_check_ms: AtomicI64,
    pub last_failover_unix_ms: AtomicI64,
    last_decision: Mutex<&'static str>,
}

fn bump(map: &Mutex<BTreeMap<&'static str, u64>>, label: &'static str) {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    if m.contains_key(label) || m.len() < MAX_SERIES {
        *m.entry(label).or_insert(0) += 1;
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics::default();
        m.vote_lag_slots.store(-1, Ordering::Relaxed);
        *m.last_decision.lock().unwrap_or_else(|e| e.into_inner()) = "none";
        m
    }

    pub fn failure(&self, label: &'static str) {
        bump(&self.failures, label);
    }

    pub fn failover(&self, result: &'static str) {
        bump(&self.failovers, result);
    }

    pub fn failovers(&self, result: &str) -> u64 {
        let m = self.failovers.lock().unwrap_or_else(|e| e.into_inner());
        m.get(result).copied().unwrap_or(0)
    }

    pub fn set_last_decision(&self, label: &'static str) {
        *self.last_decision.lock().unwrap_or_else(|e| e.into_inner()) = label;
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let geti = |a: &AtomicI64| a.load(Ordering::Relaxed);
        simple(
            &mut out,
            "huione_watchtower_checks_total",
            "counter",
            "Checks run.",
            get(&self.checks) as i64,
        );
        simple(
            &mut out,
            "huione_watchtower_failed_checks_total",
            "counter",
            "Checks in which at least one signal failed.",
            get(&self.failed_checks) as i64,
        );
        labelled(
            &mut out,
            "huione_watchtower_check_failures_total",
            "Failing signals, by reason.",
            "reason",
            &self.failures,
        );
        labelled(
            &mut out,
            "huione_watchtower_failovers_total",
            "Failovers triggered, by result (ok, error, dry_run, vetoed).",
            "result",
            &self.failovers,
        );
        simple(
            &mut out,
            "huione_watchtower_consecutive_failures",
            "gauge",
            "Consecutive failing checks now.",
            geti(&self.consecutive_failures),
        );
        simple(
            &mut out,
            "huione_watchtower_armed",
            "gauge",
            "1 while armed: the primary was seen healthy and no incident is open.",
            geti(&self.armed),
        );
        simple(
            &mut out,
            "huione_watchtower_vote_lag_slots",
            "gauge",
            "The primary vote account's lag behind the newest vote, as the cluster sees it (-1 unknown).",
            geti(&self.vote_lag_slots),
        );
        simple(
            &mut out,
            "huione_watchtower_last_check_duration_ms",
            "gauge",
            "Duration of the last check.",
            geti(&self.last_check_ms),
        );
        simple(
            &mut out,
            "huione_watchtower_last_failover_timestamp_ms",
            "gauge",
            "Unix time (ms) of the last failover triggered (0: none).",
            geti(&self.last_failover_unix_ms),
        );
        let decision = *self.last_decision.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP huione_watchtower_last_decision The last decision (label)."
        );
        let _ = writeln!(out, "# TYPE huione_watchtower_last_decision gauge");
        let _ = writeln!(
            out,
            "huione_watchtower_last_decision{{decision=\"{}\"}} 1",
            escape_label(decision)
        );
        out
    }
}

fn simple(out: &mut String, name: &str, kind: &str, help: &str, v: i64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {v}");
}

fn labelled(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    map: &Mutex<BTreeMap<&'static str, u64>>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let m = map.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in m.iter() {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape_label(k));
    }
}

/// Serves `GET /metrics` (any GET path answers the metrics) on `addr` until the task is
/// dropped. At most 16 connections at once, each bounded in time and request size.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue; // dropped: too many connections
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answer = async {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    if n == buf.len() {
                        return;
                    }
                    match stream.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let (status, body) = if buf.starts_with(b"GET ") {
                    ("200 OK", metrics.render())
                } else {
                    ("405 Method Not Allowed", String::new())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
        });
    }
}

/// Binds the metrics listener (fails early with the address in the message).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.checks.fetch_add(3, Ordering::Relaxed);
        m.failure("primary_rpc_timeout");
        m.failover("dry_run");
        m.set_last_decision("failover");
        let text = m.render();
        assert!(text.contains("huione_watchtower_checks_total 3"));
        assert!(text
            .contains("huione_watchtower_check_failures_total{reason=\"primary_rpc_timeout\"} 1"));
        assert!(text.contains("huione_watchtower_failovers_total{result=\"dry_run\"} 1"));
        assert!(text.contains("huione_watchtower_last_decision{decision=\"failover\"} 1"));
        assert!(text.contains("huione_watchtower_vote_lag_slots -1"));
        assert_eq!(m.failovers("dry_run"), 1);
        huione_rpc::metrics::check_exposition(&text).unwrap();
    }
}
