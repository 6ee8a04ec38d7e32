//! A primary whose etcd fills up (NOSPACE alarm): `getHealth` names the alarm and the fix,
//! `/metrics` shows etcd's size and alarm and the certificates' expiry, and after the fix
//! (compact, defrag, alarm disarm) the primary votes again. Real processes, real etcd over
//! mutual TLS started with a small quota.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::time::Duration;

use common::*;
use faults::*;
use huione_testkit::EtcdCluster;
use serde_json::json;

const QUOTA_BYTES: u64 = 2 * 1024 * 1024;

fn health(node: &Node) -> Option<serde_json::Value> {
    node.rpc("getHealth", json!([]))
}

/// Fills etcd with 100 KB values (under another prefix) until it refuses a write.
fn fill(etcd: &EtcdCluster) -> String {
    let value = "x".repeat(100 * 1024);
    for i in 0..200 {
        if let Err(e) = etcd.etcdctl(&["put", &format!("/other-app/junk{}", i % 5), &value]) {
            return format!("{e:#}");
        }
    }
    panic!("etcd with a {QUOTA_BYTES}-byte quota took 20 MB without refusing a write");
}

#[test]
fn nospace_is_reported_by_get_health_and_metrics_and_recovers_after_the_fix() {
    let _serial = serial();
    let etcd = EtcdCluster::start_with_quota(1, QUOTA_BYTES).unwrap();
    let (mut c, _standby) = pair_cluster(&etcd, &[]);
    c.start_all();
    wait_voting(&c, Duration::from_secs(60));
    let primary = &c.nodes[PAIR];
    let vote = vote_account(&c);

    // Metrics: etcd's size (polled every 10 s) and the certificates' expiry.
    let db = wait_for(Duration::from_secs(30), || {
        metric(primary, "huione_etcd_db_size_bytes").filter(|v| *v > 0.0)
    });
    assert!(db.is_some(), "no etcd size metric:\n{}", primary.log());
    assert_eq!(metric(primary, "huione_etcd_alarm_nospace"), Some(0.0));
    let client_left = metric(primary, "huione_tls_client_cert_expiry_seconds").unwrap();
    let ca_left = metric(primary, "huione_tls_ca_cert_expiry_seconds").unwrap();
    assert!(client_left > 300.0 * 86_400.0, "{client_left}");
    assert!(ca_left >= client_left, "{ca_left} < {client_left}");

    let refused = fill(&etcd);
    assert!(refused.contains("database space exceeded"), "{refused}");
    // The primary's stores fail; getHealth says why and how to fix it.
    let reason = wait_for(Duration::from_secs(30), || {
        let h = health(primary)?;
        let reason = h["error"]["data"]["reason"].as_str()?.to_string();
        reason.contains("NOSPACE").then_some(reason)
    });
    let reason = reason.unwrap_or_else(|| panic!("no NOSPACE reason:\n{}", primary.log()));
    for needle in ["etcdctl defrag", "etcdctl alarm disarm", "compact"] {
        assert!(reason.contains(needle), "{needle:?} missing from {reason}");
    }
    let alarm = wait_for(Duration::from_secs(30), || {
        metric(primary, "huione_etcd_alarm_nospace").filter(|v| *v == 1.0)
    });
    assert!(alarm.is_some(), "the NOSPACE alarm metric never rose");
    assert!(metric(primary, "huione_votes_withheld_total").unwrap_or(0.0) > 0.0);

    // The fix, as the message gives it; the primary votes again.
    let status = etcd.etcdctl(&["endpoint", "status", "-w", "json"]).unwrap();
    let revision = serde_json::from_str::<serde_json::Value>(&status).unwrap()[0]["Status"]
        ["header"]["revision"]
        .as_i64()
        .unwrap();
    let _ = etcd.etcdctl(&["compact", &revision.to_string()]);
    etcd.etcdctl(&["defrag"]).unwrap();
    etcd.etcdctl(&["alarm", "disarm"]).unwrap();
    let before = last_vote_of(&c.nodes[0], &vote).unwrap_or(0);
    assert!(
        wait_vote_past(&c.nodes[0], &vote, before + 5, Duration::from_secs(60)).is_some(),
        "the primary did not vote again after the fix:\n{}",
        primary.log()
    );
    let healthy = wait_for(Duration::from_secs(30), || {
        (health(primary)?["result"] == json!("ok")).then_some(())
    });
    assert!(healthy.is_some(), "getHealth: {:?}", health(primary));
}
