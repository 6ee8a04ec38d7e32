//! The watchtower's metrics (a plain value shared as `Arc`, no globals), kept in a
//! `prometheus-client` registry and served at `GET /metrics` by huione-rpc's hyper-based
//! metrics server.

use std::net::SocketAddr;
use std::sync::Arc;

use huione_rpc::metrics::{
    register, render_registry, Counter, CounterVec, Exposition, Gauge, LabelGauge,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::action::ResultKind;

#[derive(Debug)]
pub struct Metrics {
    pub checks: Counter,
    /// Checks in which at least one signal failed.
    pub failed_checks: Counter,
    /// Failing signals, by reason.
    failures: CounterVec,
    /// Failovers triggered, by result (ok, error, dry_run, vetoed).
    failovers: CounterVec,
    pub consecutive_failures: Gauge,
    /// 1 while armed (primary seen healthy, no open incident).
    pub armed: Gauge,
    /// Primary vote account lag in slots as the cluster sees it (-1: unknown).
    pub vote_lag_slots: Gauge,
    /// How long ago the primary / the standby last heard from any other node, in ms, as
    /// each reports it (`huioneStatus`; -1 unknown).
    pub primary_silence_ms: Gauge,
    pub standby_silence_ms: Gauge,
    pub last_check_ms: Gauge,
    /// Checks started and not yet judged (a check starts every interval, without waiting
    /// for earlier ones: more than about rpc-timeout / check-interval + 1 means a node
    /// answers slowly).
    pub checks_in_flight: Gauge,
    pub last_failover_unix_ms: Gauge,
    last_decision: LabelGauge,
    registry: Registry,
    /// 1 while the last check reached the primary's / the standby's RPC.
    pub primary_rpc_up: Gauge,
    pub standby_rpc_up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            checks: Counter::default(),
            failed_checks: Counter::default(),
            failures: CounterVec::new("reason"),
            failovers: CounterVec::new("result"),
            consecutive_failures: Gauge::default(),
            armed: Gauge::default(),
            vote_lag_slots: Gauge::default(),
            primary_silence_ms: Gauge::default(),
            standby_silence_ms: Gauge::default(),
            primary_rpc_up: Gauge::default(),
            standby_rpc_up: Gauge::default(),
            last_check_ms: Gauge::default(),
            checks_in_flight: Gauge::default(),
            last_failover_unix_ms: Gauge::default(),
            last_decision: LabelGauge::info(
                "huione_watchtower_last_decision",
                "The last decision (label).",
                "decision",
            ),
            registry: Registry::default(),
        };
        m.vote_lag_slots.set(-1);
        m.primary_silence_ms.set(-1);
        m.standby_silence_ms.set(-1);
        // Every result exists from the start (at 0), so `increase()` sees the first
        // failover as a step from 0 to 1.
        for r in [
            ResultKind::Ok,
            ResultKind::Error,
            ResultKind::DryRun,
            ResultKind::Vetoed,
        ] {
            m.failovers.add(r.label(), 0);
        }
        m.last_decision.set("none");
        register(&mut r, "huione_watchtower_checks", "Checks run.", &m.checks);
        register(
            &mut r,
            "huione_watchtower_primary_rpc_up",
            "1 if the last check reached the primary's RPC (0: refused or timed out).",
            &m.primary_rpc_up,
        );
        register(
            &mut r,
            "huione_watchtower_standby_rpc_up",
            "1 if the last check reached the standby's RPC (0: it cannot arm or fail over).",
            &m.standby_rpc_up,
        );
        register(
            &mut r,
            "huione_watchtower_failed_checks",
            "Checks in which at least one signal failed.",
            &m.failed_checks,
        );
        register(
            &mut r,
            "huione_watchtower_check_failures",
            "Failing signals, by reason.",
            &m.failures,
        );
        register(
            &mut r,
            "huione_watchtower_failovers",
            "Failovers triggered, by result (ok, error, dry_run, vetoed).",
            &m.failovers,
        );
        register(
            &mut r,
            "huione_watchtower_consecutive_failures",
            "Consecutive failing checks now.",
            &m.consecutive_failures,
        );
        register(
            &mut r,
            "huione_watchtower_armed",
            "1 while armed: the primary was seen healthy and no incident is open.",
            &m.armed,
        );
        register(
            &mut r,
            "huione_watchtower_vote_lag_slots",
            "The primary vote account's lag behind the newest vote, as the cluster sees it (-1 unknown).",
            &m.vote_lag_slots,
        );
        register(
            &mut r,
            "huione_watchtower_primary_silence_ms",
            "How long ago the primary last heard from any other node, as it reports (-1 unknown); over --max-peer-silence-ms while the standby hears the cluster, it is cut off.",
            &m.primary_silence_ms,
        );
        register(
            &mut r,
            "huione_watchtower_standby_silence_ms",
            "How long ago the standby last heard from any other node, as it reports (-1 unknown).",
            &m.standby_silence_ms,
        );
        register(
            &mut r,
            "huione_watchtower_last_check_duration_ms",
            "Duration of the last check.",
            &m.last_check_ms,
        );
        register(
            &mut r,
            "huione_watchtower_checks_in_flight",
            "Checks started and not yet judged (one starts every check interval).",
            &m.checks_in_flight,
        );
        register(
            &mut r,
            "huione_watchtower_last_failover_timestamp_ms",
            "Unix time (ms) of the last failover triggered (0: none).",
            &m.last_failover_unix_ms,
        );
        m.last_decision.register(&mut r);
        Metrics { registry: r, ..m }
    }

    pub fn failure(&self, label: &'static str) {
        self.failures.inc(label);
    }

    pub fn failover(&self, result: &'static str) {
        self.failovers.inc(result);
    }

    pub fn failovers(&self, result: &str) -> u64 {
        self.failovers.get(result)
    }

    pub fn set_last_decision(&self, label: &'static str) {
        self.last_decision.set(label);
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        render_registry(&self.registry)
    }
}

impl Exposition for Metrics {
    fn render(&self) -> String {
        Metrics::render(self)
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped (huione-rpc's hyper
/// metrics server: at most 16 connections, bounded in time).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    huione_rpc::metrics::serve_metrics(listener, metrics).await
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
        m.checks.add(3);
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
        assert!(text.contains("huione_watchtower_primary_silence_ms -1"));
        assert!(text.contains("huione_watchtower_standby_silence_ms -1"));
        assert!(text.contains("huione_watchtower_standby_rpc_up 0"));
        assert!(text.contains("huione_watchtower_primary_rpc_up 0"));
        assert_eq!(m.failovers("dry_run"), 1);
        assert!(text.contains("huione_watchtower_failovers_total{result=\"ok\"} 0"));
        huione_rpc::metrics::check_exposition(&text).unwrap();
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let m = Arc::new(Metrics::new());
        m.armed.set(1);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, m));
        let get = |req: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("application/openmetrics-text"), "{ok}");
        assert!(ok.lines().any(|l| l == "huione_watchtower_armed 1"), "{ok}");
        let body = ok.split_once("\r\n\r\n").unwrap().1;
        huione_rpc::metrics::check_exposition(body).unwrap();
        let other = get("GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let post = get(
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        server.abort();
    }
}
