//! The operator guide's software upgrade with two builds that report different versions:
//! install the new build on the primary, fail over to the secondary (the primary exits),
//! restart the primary on the new build (it catches up and reclaims; the secondary exits),
//! then upgrade the secondary. getVersion on the identity's node reports the new version,
//! and the auditor finds no double vote.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use huione_core::audit::{AuditRecord, Auditor};
use huione_testkit::EtcdCluster;
use serde_json::json;

const NEW_VERSION: &str = "0.2.0-upgrade-test";

/// Builds huione-validator with HUIONE_VERSION set, copies it out, and rebuilds the
/// normal one so the rest of the suite keeps its binary.
fn build_new_version(dest: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = |version: Option<&str>| {
        let mut cmd = Command::new(&cargo);
        // Without the test's cargo variables (they would make the inner build rebuild ring
        // and everything above it).
        huione_testkit::without_cargo_test_env(&mut cmd);
        cmd.args([
            "build",
            "-q",
            "-p",
            "huione-validator",
            "--bin",
            "huione-validator",
        ]);
        match version {
            Some(v) => cmd.env("HUIONE_VERSION", v),
            None => cmd.env_remove("HUIONE_VERSION"),
        };
        let st = cmd.stdout(Stdio::null()).status().unwrap();
        assert!(st.success(), "cargo build of huione-validator failed");
    };
    build(Some(NEW_VERSION));
    let new_bin = dest.join("huione-validator-new");
    std::fs::copy(BIN, &new_bin).unwrap();
    build(None);
    new_bin
}

fn start_with(node: &mut Node, bin: &Path) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.ledger.with_extension("log"))
        .unwrap();
    node.child = Some(
        Command::new(bin)
            .args(&node.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
}

fn version(node: &Node) -> Option<String> {
    Some(
        node.rpc("getVersion", json!([]))?["result"]["solana-core"]
            .as_str()?
            .to_string(),
    )
}

fn identity(node: &Node) -> Option<String> {
    Some(
        node.rpc("getIdentity", json!([]))?["result"]["identity"]
            .as_str()?
            .to_string(),
    )
}

#[test]
fn upgrade_by_failover_as_in_the_operator_guide() {
    let scratch = tempfile::tempdir().unwrap();
    let new_bin = build_new_version(scratch.path());
    let old_version = env!("CARGO_PKG_VERSION");

    let etcd = EtcdCluster::start(1).unwrap();
    let flags = etcd.validator_flags();
    let mut c = Cluster::new(BIN, 3, 100);
    let entry = c.nodes[0].gossip_port;
    c.nodes[2] = c.node_spec("primary", 2, Some(entry), &flags);
    let mut secondary = c.standby_spec("secondary", 2, &flags, true);
    c.start_all();
    secondary.start();
    let primary_id = c.keys[2].0.pubkey().to_string();
    let ok = wait_for(Duration::from_secs(40), || {
        (c.nodes[0].slot("finalized")? >= 20 && version(&c.nodes[2])? == old_version).then_some(())
    });
    assert!(ok.is_some(), "cluster not up:\n{}", c.logs());

    // 1. The new software is installed (new_bin); 2. fail over to the secondary.
    let out = Command::new(BIN)
        .args([
            "--ledger",
            secondary.ledger.to_str().unwrap(),
            "set-identity",
        ])
        .arg(&c.nodes[2].identity_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = c.nodes[2].wait_exit(Duration::from_secs(10));
    assert!(matches!(code, Some(3) | Some(4)), "primary exit {code:?}");

    // 3. The primary restarts on the new version, catches up and reclaims its identity.
    std::thread::sleep(Duration::from_secs(1));
    start_with(&mut c.nodes[2], &new_bin);
    let code = secondary.wait_exit(Duration::from_secs(40));
    assert!(
        matches!(code, Some(3) | Some(4)),
        "the secondary should exit when the primary reclaims, got {code:?}:\n{}",
        c.nodes[2].log()
    );
    let reclaimed = wait_for(Duration::from_secs(20), || {
        (identity(&c.nodes[2])? == primary_id && version(&c.nodes[2])? == NEW_VERSION).then_some(())
    });
    assert!(
        reclaimed.is_some(),
        "primary on the new version:\n{}",
        c.nodes[2].log()
    );

    // 4. Upgrade the secondary: it comes back on the new version with its own identity.
    start_with(&mut secondary, &new_bin);
    let standby_ok = wait_for(Duration::from_secs(20), || {
        (version(&secondary)? == NEW_VERSION && identity(&secondary)? != primary_id).then_some(())
    });
    assert!(
        standby_ok.is_some(),
        "secondary on the new version:\n{}",
        secondary.log()
    );

    // The identity votes again, and nothing was voted twice.
    let vote = c.keys[2].1.pubkey().to_string();
    let last_vote = |n: &Node| -> Option<u64> {
        let va = n.rpc("getVoteAccounts", json!([]))?;
        va["result"]["current"]
            .as_array()?
            .iter()
            .find(|a| a["votePubkey"] == vote.as_str())?["lastVote"]
            .as_u64()
    };
    let before = last_vote(&c.nodes[0]).unwrap_or(0);
    let voting = wait_for(Duration::from_secs(20), || {
        (last_vote(&c.nodes[0])? > before + 5).then_some(())
    });
    assert!(
        voting.is_some(),
        "the upgraded primary does not vote:\n{}",
        c.nodes[2].log()
    );
    let mut records: Vec<AuditRecord> = Vec::new();
    for l in c.nodes.iter().map(|n| &n.ledger).chain([&secondary.ledger]) {
        if let Ok(f) = std::fs::File::open(l.join("audit.jsonl")) {
            records.extend(Auditor::read_json_lines(std::io::BufReader::new(f)).unwrap());
        }
    }
    let auditor = Auditor::audit_all(c.genesis.hash, &records);
    assert!(
        auditor.violations().is_empty(),
        "{:#?}",
        auditor.violations()
    );
    // Vote slots the identity missed over the whole upgrade, against a healthy validator.
    let voted = |node: &str| -> std::collections::BTreeSet<u64> {
        records
            .iter()
            .filter_map(|r| match r {
                AuditRecord::Vote(v) if v.node.to_string() == node => Some(v.slot),
                _ => None,
            })
            .collect()
    };
    let ours = voted(&primary_id);
    let witness = voted(&c.keys[0].0.pubkey().to_string());
    let (lo, hi) = (*ours.iter().next().unwrap(), *ours.iter().last().unwrap());
    let missed = witness
        .iter()
        .filter(|s| (lo..=hi).contains(*s) && !ours.contains(s))
        .count();
    eprintln!(
        "upgrade: {} vote slots of the identity, {missed} missed (witness voted them)",
        ours.len()
    );
}
