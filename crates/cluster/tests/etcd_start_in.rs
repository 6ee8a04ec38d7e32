//! `EtcdCluster::start_in`: certificates and member data in a given directory, kept after
//! the cluster is stopped, members gone after `stop`.

use huione_cluster::etcd::EtcdCluster;
use std::time::Duration;

fn process_exists(pid: u32) -> bool {
    // Reaped children disappear from /proc; a zombie would still show, but `stop` waits.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn start_in_keeps_certs_and_data_in_the_dir_and_stop_ends_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cluster");
    let mut cluster = EtcdCluster::start_in(&root, 1).expect("start etcd in dir");
    for name in [
        "etcd-ca.pem",
        "etcd.pem",
        "etcd-key.pem",
        "validator.pem",
        "validator-key.pem",
    ] {
        assert!(root.join("certs").join(name).is_file(), "{name} missing");
    }
    assert_eq!(cluster.certs_dir(), root.join("certs"));
    assert_eq!(cluster.tls().ca_file, root.join("certs/etcd-ca.pem"));
    assert!(root.join("etcd/m0.etcd").is_dir());
    assert_eq!(cluster.log_path(0), root.join("etcd/m0.log"));
    cluster.etcdctl(&["put", "k", "v1"]).unwrap();
    assert!(cluster.etcdctl(&["get", "k"]).unwrap().contains("v1"));
    let pid = cluster.pid(0).unwrap();
    cluster.stop(Duration::from_secs(10));
    assert!(
        !process_exists(pid),
        "member {pid} still running after stop"
    );
    assert_eq!(cluster.pid(0), None);
    drop(cluster);
    assert!(
        root.join("etcd/m0.etcd").is_dir() && root.join("certs/etcd-ca.pem").is_file(),
        "start_in must keep its files after drop"
    );
}
