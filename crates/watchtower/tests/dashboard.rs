//! deploy/grafana/huione.json queries only metrics that exist: every `huione_*` name in
//! its queries is exported by a live validator's `/metrics` (a real one-node cluster) or
//! by the watchtower's registry.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

/// The `huione_*` metric names a PromQL expression mentions.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("huione_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Sample names in an exposition (`name{...} v` or `name v`).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/huione.json"
    );
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")),
    )
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut wanted = BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let names = names_in(expr);
            assert!(!names.is_empty(), "query names no huione metric: {expr}");
            wanted.extend(names);
        }
    }
    assert!(wanted.len() >= 10, "{wanted:?}");

    let mut c = Cluster::new(validator_bin(), 1, 100);
    c.start_all();
    let port = c.nodes[0].rpc_port;
    // Wait until the node voted, so every series (histogram buckets included) is there.
    let text = wait_for(Duration::from_secs(60), || {
        let t = http_get(port, "/metrics")?;
        t.lines()
            .any(|l| l.starts_with("huione_votes_sent_total ") && !l.ends_with(" 0"))
            .then_some(t)
    })
    .unwrap_or_else(|| panic!("the node never voted:\n{}", c.logs()));
    huione_rpc::metrics::check_exposition(&text).unwrap();
    let mut have = exported(&text);
    have.extend(exported(
        &huione_watchtower::metrics::Metrics::new().render(),
    ));
    let missing: Vec<&String> = wanted.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "dashboard queries name metrics nobody exports: {missing:?}\nexported: {have:?}"
    );
}
