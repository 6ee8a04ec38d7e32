//! A real cluster of huione-validator processes on loopback.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn three_validators_advance_roots_and_serve_rpc() {
    let mut c = Cluster::new(3, 100);
    c.start_all();
    let rooted = wait_for(Duration::from_secs(40), || {
        let r = c.nodes.iter().filter_map(|n| n.slot("finalized")).min()?;
        (r >= 40).then_some(r)
    });
    assert!(
        rooted.is_some(),
        "roots did not advance on every node:\n{}",
        c.logs()
    );
    let n0 = &c.nodes[0];
    let health = n0.rpc("getHealth", json!([])).unwrap();
    assert_eq!(health["result"], "ok", "{health}");
    let id = n0.rpc("getIdentity", json!([])).unwrap();
    assert_eq!(id["result"]["identity"], c.keys[0].0.pubkey().to_string());
    let va = n0.rpc("getVoteAccounts", json!([])).unwrap();
    let current = va["result"]["current"].as_array().unwrap();
    assert_eq!(current.len(), 3, "{va}");
    for a in current {
        assert!(a["lastVote"].as_u64().unwrap() > 0, "{a}");
    }
    let nodes = n0.rpc("getClusterNodes", json!([])).unwrap();
    assert!(nodes["result"].as_array().unwrap().len() >= 2, "{nodes}");
}

#[test]
fn killed_validator_restarts_catches_up_and_votes_again() {
    let mut c = Cluster::new(3, 100);
    c.start_all();
    let ok = wait_for(Duration::from_secs(40), || {
        let r = c.nodes.iter().filter_map(|n| n.slot("finalized")).min()?;
        (r >= 20).then_some(())
    });
    assert!(ok.is_some(), "cluster did not root:\n{}", c.logs());
    c.nodes[2].kill9();
    std::thread::sleep(Duration::from_secs(2));
    let before = c.nodes[0].slot("finalized").unwrap();
    c.nodes[2].start();
    let vote = c.keys[2].1.pubkey().to_string();
    let caught_up = wait_for(Duration::from_secs(40), || {
        let va = c.nodes[0].rpc("getVoteAccounts", json!([]))?;
        let accts = va["result"]["current"].as_array()?.clone();
        let mine = accts.iter().find(|a| a["votePubkey"] == vote.as_str())?;
        let restarted_root = c.nodes[2].slot("finalized")?;
        (mine["lastVote"].as_u64()? > before + 10 && restarted_root > before).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "restarted node did not catch up and vote:\n{}",
        c.logs()
    );
}
