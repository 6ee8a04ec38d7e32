//! The operator guide's failover with real processes and a real etcd over mutual TLS:
//! a primary with its tower in etcd, a hot standby, `set-identity` on the standby, the
//! primary stopping, and an audit of every vote and block the nodes recorded.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use huione_core::audit::{AuditRecord, Auditor};
use huione_testkit::EtcdCluster;
use serde_json::json;

/// Every record in the ledgers' audit logs; a missing or torn log fails the test.
fn audit_records(ledgers: &[&Path]) -> Vec<AuditRecord> {
    let mut all = Vec::new();
    for l in ledgers {
        all.extend(
            huione_validator::ledger::audit_log::read_records(l)
                .unwrap_or_else(|e| panic!("audit log of {}: {e}", l.display())),
        );
    }
    all
}

fn last_vote_of(node: &Node, vote_account: &str) -> Option<u64> {
    let va = node.rpc("getVoteAccounts", json!([]))?;
    let all: Vec<serde_json::Value> = ["current", "delinquent"]
        .iter()
        .filter_map(|k| va["result"][k].as_array().cloned())
        .flatten()
        .collect();
    all.iter().find(|a| a["votePubkey"] == vote_account)?["lastVote"].as_u64()
}

#[test]
fn set_identity_moves_voting_to_the_standby_and_stops_the_primary() {
    let etcd = EtcdCluster::start(1).unwrap();
    let mut c = Cluster::new(BIN, 3, 100);
    let flags = etcd.validator_flags();
    // v2 is the primary, with its tower in etcd.
    let entry = c.nodes[0].gossip_port;
    let primary = c.node_spec("primary", 2, Some(entry), &flags);
    c.nodes[2] = primary;
    // The standby: its own identity, the primary's vote account and voter key.
    let mut standby = c.standby_spec("secondary", 2, &flags, true);
    c.start_all();
    standby.start();

    let vote = c.keys[2].1.pubkey().to_string();
    let primary_id = c.keys[2].0.pubkey().to_string();
    let voting = wait_for(Duration::from_secs(40), || {
        let r = c.nodes[0].slot("finalized")?;
        let lv = last_vote_of(&c.nodes[0], &vote)?;
        (r >= 20 && lv >= 20).then_some(())
    });
    assert!(voting.is_some(), "the primary did not vote:\n{}", c.logs());
    // The tower is in etcd, visible as raw keys.
    let keys = etcd
        .etcdctl(&["get", "--prefix", "/huione", "--keys-only"])
        .unwrap();
    assert!(
        keys.contains(&format!("/huione/tower/{primary_id}")),
        "{keys}"
    );
    assert!(
        standby.wait_exit(Duration::from_millis(10)).is_none(),
        "standby exited early:\n{}",
        standby.log()
    );

    let t0 = now_ms();
    let out = Command::new(BIN)
        .args(["--ledger", standby.ledger.to_str().unwrap(), "set-identity"])
        .arg(&c.nodes[2].identity_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "set-identity failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        standby.log()
    );
    let code = c.nodes[2].wait_exit(Duration::from_secs(10));
    // Whichever comes first: the fenced store (3, lock lost) or the newer instance's
    // announcement in gossip (4, duplicate instance).
    assert!(
        matches!(code, Some(3) | Some(4)),
        "the primary must stop with exit code 3 or 4, got {code:?}:\n{}",
        c.nodes[2].log()
    );
    let lost_ms = now_ms() - t0;

    let before = last_vote_of(&c.nodes[0], &vote).unwrap();
    let moved_on = wait_for(Duration::from_secs(20), || {
        (last_vote_of(&c.nodes[0], &vote)? > before + 10).then_some(())
    });
    assert!(
        moved_on.is_some(),
        "the standby did not vote as the primary:\n{}\n{}",
        standby.log(),
        c.logs()
    );
    assert_eq!(
        standby.rpc("getIdentity", json!([])).unwrap()["result"]["identity"],
        primary_id.as_str()
    );

    let ledgers: Vec<&Path> = c
        .nodes
        .iter()
        .map(|n| n.ledger.as_path())
        .chain([standby.ledger.as_path()])
        .collect();
    let records = audit_records(&ledgers);
    let first_standby_vote = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Vote(v) if v.node.to_string() == primary_id && v.time_ms >= t0 => {
                Some(v.time_ms)
            }
            _ => None,
        })
        .min()
        .unwrap();
    eprintln!(
        "set-identity -> first vote by the standby: {} ms; primary exited (code {code:?}) {} ms after the command",
        first_standby_vote - t0,
        lost_ms
    );
    let auditor = Auditor::audit_all(c.genesis.hash, &records);
    assert!(
        auditor.violations().is_empty(),
        "safety violations: {:#?}",
        auditor.violations()
    );
    let votes = records
        .iter()
        .filter(|r| matches!(r, AuditRecord::Vote(_)))
        .count();
    assert!(votes > 50, "too few votes audited: {votes}");
}

#[test]
fn standby_needs_the_authorized_voter_and_gets_it_over_the_admin_socket() {
    let etcd = EtcdCluster::start(1).unwrap();
    let mut c = Cluster::new(BIN, 3, 100);
    let flags = etcd.validator_flags();
    let entry = c.nodes[0].gossip_port;
    c.nodes[2] = c.node_spec("primary", 2, Some(entry), &flags);
    // No --authorized-voter: the standby cannot sign the primary's votes yet.
    let mut standby = c.standby_spec("secondary", 2, &flags, false);
    c.start_all();
    standby.start();
    let vote = c.keys[2].1.pubkey().to_string();
    let voting = wait_for(Duration::from_secs(40), || {
        (last_vote_of(&c.nodes[0], &vote)? >= 10).then_some(())
    });
    assert!(voting.is_some(), "the primary did not vote:\n{}", c.logs());
    let admin = |args: &[&str]| {
        Command::new(BIN)
            .args(["--ledger", standby.ledger.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let primary_key = c.nodes[2].identity_file.to_str().unwrap().to_string();
    let out = admin(&["set-identity", &primary_key]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("authorized voter") && err.contains("--authorized-voter"),
        "{err}"
    );
    // The refused set-identity did not take the lock: the primary still votes.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        c.nodes[2].wait_exit(Duration::from_millis(10)).is_none(),
        "the primary stopped:\n{}",
        c.nodes[2].log()
    );

    let out = admin(&["authorized-voter", "add", &primary_key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin(&["set-identity", &primary_key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = c.nodes[2].wait_exit(Duration::from_secs(10));
    assert!(matches!(code, Some(3) | Some(4)), "primary exit {code:?}");
    let before = last_vote_of(&c.nodes[0], &vote).unwrap();
    let moved_on = wait_for(Duration::from_secs(20), || {
        (last_vote_of(&c.nodes[0], &vote)? > before + 5).then_some(())
    });
    assert!(
        moved_on.is_some(),
        "the standby did not vote:\n{}",
        standby.log()
    );
    let out = admin(&["monitor", "--count", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&c.keys[2].0.pubkey().to_string()) && text.contains("Primary"),
        "{text}"
    );
    let out = admin(&["exit"]);
    assert!(out.status.success());
    assert_eq!(standby.wait_exit(Duration::from_secs(10)), Some(0));
    let ledgers: Vec<&Path> = c
        .nodes
        .iter()
        .map(|n| n.ledger.as_path())
        .chain([standby.ledger.as_path()])
        .collect();
    let auditor = Auditor::audit_all(c.genesis.hash, &audit_records(&ledgers));
    assert!(
        auditor.violations().is_empty(),
        "{:#?}",
        auditor.violations()
    );
}
