//! The metrics registry renders valid Prometheus text: every line is a HELP/TYPE line or
//! a sample of a declared family, with the values the daemon set.

use std::time::Duration;

use huione_rpc::metrics::{check_exposition, escape_label};
use huione_rpc::{LockStateKind, Metrics};

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_metric_is_exported_and_valid() {
    let m = Metrics::new();
    m.slot_processed.set_u64(200);
    m.slot_confirmed.set_u64(199);
    m.slot_finalized.set_u64(168);
    m.last_vote_slot.set_u64(199);
    m.root_slot.set_u64(168);
    m.tower_store_latency.observe(Duration::from_micros(1500));
    m.tower_store_latency.observe(Duration::from_millis(20));
    m.votes_withheld.add(3);
    m.votes_sent.add(10);
    m.primary.set(1);
    m.tower_lock_revision.set(42);
    m.set_identity("9QzsJf7LPLj8GkXbYT3LFDKqsj2hHG7TA3xinJHu8epQ");
    m.set_lock_state(LockStateKind::Held);
    m.rpc_requests.inc("getSlot");
    m.rpc_rejected.inc("parse_error");
    m.packets_dropped.add("bad_signature", 5);
    m.packets_dropped.inc("truncated");
    m.admin_requests.inc("status");
    let text = m.render();
    check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    for (series, want) in [
        ("huione_slot{commitment=\"processed\"}", 200.0),
        ("huione_slot{commitment=\"confirmed\"}", 199.0),
        ("huione_slot{commitment=\"finalized\"}", 168.0),
        ("huione_last_vote_slot", 199.0),
        ("huione_root_slot", 168.0),
        ("huione_tower_store_latency_seconds_count", 2.0),
        (
            "huione_tower_store_latency_seconds_bucket{le=\"0.002\"}",
            1.0,
        ),
        (
            "huione_tower_store_latency_seconds_bucket{le=\"+Inf\"}",
            2.0,
        ),
        ("huione_votes_withheld_total", 3.0),
        ("huione_votes_sent_total", 10.0),
        ("huione_primary", 1.0),
        (
            "huione_identity_info{identity=\"9QzsJf7LPLj8GkXbYT3LFDKqsj2hHG7TA3xinJHu8epQ\"}",
            1.0,
        ),
        ("huione_tower_lock_state{state=\"held\"}", 1.0),
        ("huione_tower_lock_state{state=\"lost\"}", 0.0),
        ("huione_tower_lock_revision", 42.0),
        ("huione_rpc_requests_total{method=\"getSlot\"}", 1.0),
        ("huione_rpc_rejected_total{reason=\"parse_error\"}", 1.0),
        (
            "huione_packets_dropped_total{reason=\"bad_signature\"}",
            5.0,
        ),
        ("huione_packets_dropped_total{reason=\"truncated\"}", 1.0),
        ("huione_admin_requests_total{method=\"status\"}", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    let sum = sample(&text, "huione_tower_store_latency_seconds_sum").unwrap();
    assert!((sum - 0.0215).abs() < 1e-9, "{sum}");
}

#[test]
fn hostile_label_values_stay_valid() {
    let m = Metrics::new();
    m.set_identity("a\"b\\c\nd");
    m.packets_dropped.inc("x\"}\n# TYPE evil counter");
    let text = m.render();
    check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(text.contains(&escape_label("a\"b\\c\nd")));
}

#[test]
fn registries_are_independent() {
    // No process-wide state: two registries do not see each other's updates.
    let a = Metrics::new();
    let b = Metrics::new();
    a.votes_withheld.inc();
    assert_eq!(a.votes_withheld.get(), 1);
    assert_eq!(b.votes_withheld.get(), 0);
}
