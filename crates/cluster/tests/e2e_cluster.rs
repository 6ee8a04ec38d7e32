//! End to end with the real `huione-validator`: a 3-validator cluster with etcd over
//! mutual TLS (the primary keeps its tower there) finalizes slots on every node, and
//! stops cleanly on SIGTERM.
//!
//! The validator binary is taken from next to the launcher (the same target dir); this
//! test builds it first with `cargo build -p huione-validator` (a no-op when fresh), since
//! `cargo test -p huione-cluster` alone does not.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{all_pids, assert_all_gone, Launcher, LAUNCHER};
use huione_cluster::manifest::{ClusterManifest, ClusterState};
use huione_cluster::plan::Role;
use huione_rpc::client::blocking::RpcClient;

fn validator_bin() -> PathBuf {
    let bin = std::path::Path::new(LAUNCHER).with_file_name("huione-validator");
    // Without the test's cargo variables (they would make the inner build rebuild ring
    // and everything above it).
    huione_cluster::etcd::cargo_build(env!("CARGO_MANIFEST_DIR"), &["-p", "huione-validator"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

fn finalized(m: &ClusterManifest) -> Vec<Option<u64>> {
    m.nodes
        .iter()
        .map(|n| {
            let addr: SocketAddr = n.rpc_url.trim_start_matches("http://").parse().unwrap();
            RpcClient::at(addr, Duration::from_secs(1))
                .get_slot("finalized")
                .ok()
        })
        .collect()
}

#[test]
fn three_validators_with_etcd_finalize_slots_and_stop_cleanly() {
    let bin = validator_bin();
    let work = tempfile::tempdir().unwrap();
    let mut l = Launcher::start(
        work.path(),
        &[
            "--validators",
            "3",
            "--etcd",
            "--slot-ms",
            "100",
            "--slots-per-epoch",
            "64",
            "--start-in-ms",
            "1000",
            "--validator-bin",
            bin.to_str().unwrap(),
        ],
        &[],
    );
    let m = l.wait_for_state(ClusterState::Running, Duration::from_secs(120));
    assert_eq!(m.by_role(Role::Primary).unwrap().tower_storage, "etcd");
    let start = Instant::now();
    let baseline = loop {
        let f = finalized(&m);
        if f.iter().all(Option::is_some) {
            break f.into_iter().flatten().max().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "RPC not answering\n{}",
            l.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let target = baseline + 20;
    let deadline = Instant::now() + Duration::from_secs(90);
    let last = loop {
        let last = finalized(&m);
        if last.iter().all(|f| f.is_some_and(|f| f >= target)) {
            break last;
        }
        if Instant::now() >= deadline {
            let logs: String = m
                .nodes
                .iter()
                .map(|n| {
                    let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    format!(
                        "--- {}\n{}\n",
                        n.name,
                        lines[lines.len().saturating_sub(15)..].join("\n")
                    )
                })
                .collect();
            panic!(
                "finalized slots did not pass {target} on every node (last {last:?})\n{}\n{logs}",
                l.output()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "finalized went from {baseline} to {last:?} in {:?}",
        start.elapsed()
    );
    // The identity each node reports is the one in cluster.json.
    for n in &m.nodes {
        let addr: SocketAddr = n.rpc_url.trim_start_matches("http://").parse().unwrap();
        let id = RpcClient::at(addr, Duration::from_secs(2))
            .call("getIdentity", serde_json::json!([]))
            .unwrap();
        assert_eq!(id["identity"], n.identity.to_string(), "{}", n.name);
    }
    let pids = all_pids(&m);
    l.signal(libc::SIGTERM);
    let status = l.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", l.output());
    assert_all_gone(&pids, Duration::from_secs(5));
    let out = l.output();
    assert!(
        !out.contains("did not exit on SIGTERM"),
        "a validator needed SIGKILL:\n{out}"
    );
    assert_eq!(
        ClusterManifest::read(&l.dir).unwrap().state,
        ClusterState::Stopped
    );
}
