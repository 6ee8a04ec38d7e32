//! Real-etcd tests of the testkit launcher: single member over mutual TLS, three members
//! surviving a kill and coming back after restart, freeze/thaw, and bad client certificates.

use huione_cluster::etcd::{ClientTls, EtcdCluster};
use std::process::Command;

/// Runs curl against `https://<endpoint>/` and returns the HTTP status (None if curl
/// failed, e.g. because the TLS handshake was refused).
fn curl_status(endpoint: &str, ca: &std::path::Path, client: Option<&ClientTls>) -> Option<u16> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "--silent",
        "--show-error",
        "--max-time",
        "5",
        "--noproxy",
        "*",
    ])
    .args(["--output", "/dev/null", "--write-out", "%{http_code}"])
    .arg("--cacert")
    .arg(ca);
    if let Some(tls) = client {
        cmd.arg("--cert")
            .arg(&tls.cert_file)
            .arg("--key")
            .arg(&tls.key_file);
    }
    let out = cmd
        .arg(format!("https://{endpoint}/"))
        .output()
        .expect("run curl");
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[test]
fn single_member_answers_404_to_validator_cert_and_refuses_no_cert() {
    let cluster = EtcdCluster::start(1).expect("start etcd");
    let tls = cluster.tls();
    let ep = cluster.endpoint(0);
    assert_eq!(
        curl_status(&ep, &tls.ca_file, Some(&tls)),
        Some(404),
        "log:\n{}",
        cluster.log_tail(0, 20)
    );
    let without = curl_status(&ep, &tls.ca_file, None);
    assert_ne!(
        without,
        Some(404),
        "etcd answered a client without a certificate"
    );
}

#[test]
fn single_member_refuses_expired_and_foreign_client_certs() {
    let cluster = EtcdCluster::start(1).expect("start etcd");
    let ep = cluster.endpoint(0);
    let ca = cluster.tls().ca_file;
    let expired = cluster.expired_client_tls().expect("expired cert");
    assert_eq!(
        curl_status(&ep, &ca, Some(&expired)),
        None,
        "expired client cert accepted"
    );
    let foreign = cluster.foreign_client_tls().expect("foreign cert");
    assert_eq!(
        curl_status(&ep, &ca, Some(&foreign)),
        None,
        "foreign-CA client cert accepted"
    );
    // And the good one still works, so the refusals above are about the certificates.
    assert_eq!(curl_status(&ep, &ca, Some(&cluster.tls())), Some(404));
}

#[test]
fn three_members_survive_a_kill_and_restart() {
    let mut cluster = EtcdCluster::start(3).expect("start 3-member etcd");
    assert_eq!(cluster.members(), 3);
    assert_eq!(cluster.client_endpoints().len(), 3);
    cluster.etcdctl(&["put", "k1", "v1"]).expect("put");
    let got = cluster
        .etcdctl(&["get", "k1", "--print-value-only"])
        .expect("get");
    assert_eq!(got.trim(), "v1");

    let leader = cluster.leader_index().expect("a leader");
    let pid = cluster.pid(leader).expect("leader pid");
    cluster.kill(leader);
    assert_eq!(cluster.pid(leader), None);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "etcd {pid} still alive"
    );

    // The other two elect a new leader and keep serving writes and linearizable reads.
    let new_leader = cluster
        .wait_for_leader(std::time::Duration::from_secs(10))
        .expect("new leader");
    assert_ne!(new_leader, leader);
    cluster
        .etcdctl(&["put", "k2", "v2"])
        .expect("put after kill");
    let got = cluster
        .etcdctl(&["get", "k2", "--print-value-only"])
        .expect("get after kill");
    assert_eq!(got.trim(), "v2");

    cluster.restart(leader).expect("restart");
    assert!(cluster.pid(leader).is_some());
    let got = cluster
        .etcdctl_member(leader, &["get", "k2", "--print-value-only"])
        .expect("get from restarted member");
    assert_eq!(got.trim(), "v2");
}

#[test]
fn frozen_member_does_not_stop_the_others_and_thaws() {
    let mut cluster = EtcdCluster::start(3).expect("start 3-member etcd");
    let victim = (cluster.leader_index().expect("leader") + 1) % 3;
    cluster.freeze(victim);
    let err = cluster
        .etcdctl_member(victim, &["--command-timeout=1s", "get", "x"])
        .expect_err("a frozen member answered");
    assert!(format!("{err:#}").contains("etcdctl"), "{err:#}");
    cluster
        .etcdctl(&["put", "k", "v"])
        .expect("put while one member is frozen");
    cluster.thaw(victim);
    cluster
        .wait_healthy(victim, std::time::Duration::from_secs(10))
        .expect("thawed member healthy");
    assert!(cluster.is_running(victim));
}

#[test]
fn single_member_keeps_its_data_across_kill_and_restart() {
    let mut cluster = EtcdCluster::start(1).expect("start etcd");
    assert!(cluster.dir().join("certs").join("etcd-ca.pem").is_file());
    assert_eq!(cluster.certs_dir(), cluster.dir().join("certs"));
    assert_eq!(cluster.tls().domain_name, "localhost");
    assert!(cluster.client_endpoints()[0].starts_with("127.0.0.1:"));
    cluster.etcdctl(&["put", "tower", "t1"]).expect("put");
    assert_eq!(cluster.leader_index(), Some(0));
    cluster.kill(0);
    assert!(cluster
        .etcdctl(&["--dial-timeout=500ms", "get", "tower"])
        .is_err());
    cluster.restart(0).expect("restart");
    let got = cluster
        .etcdctl(&["get", "tower", "--print-value-only"])
        .expect("get");
    assert_eq!(got.trim(), "t1");
}

#[test]
fn dropping_the_cluster_kills_members_and_removes_the_dir() {
    let cluster = EtcdCluster::start(1).expect("start etcd");
    let pid = cluster.pid(0).expect("pid");
    let dir = cluster.dir().to_path_buf();
    cluster.freeze(0);
    drop(cluster);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "etcd {pid} survived drop"
    );
    assert!(!dir.exists(), "{} survived drop", dir.display());
}
