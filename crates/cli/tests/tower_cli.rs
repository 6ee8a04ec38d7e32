//! `huione-tower show` and `history` against file storage.

use std::process::Command;

use huione_keys::Keypair;
use huione_tower::{SavedTower, Tower};
use huione_tower_storage::{FileTowerStorage, LockOwner};

fn tower_cmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_huione-tower"))
        .args(args)
        .output()
        .unwrap()
}

fn stored(dir: &std::path::Path) -> (Keypair, Tower) {
    let kp = Keypair::from_secret(&[42; 32]);
    let s = FileTowerStorage::new(dir).unwrap();
    let lease = s
        .acquire_now(
            &kp.pubkey(),
            LockOwner::for_this_process(kp.pubkey(), "startup"),
        )
        .unwrap();
    let mut t = Tower::new(kp.pubkey());
    for slot in [10, 11, 12, 20] {
        t.record_vote(slot, [1; 32], 1_000);
    }
    s.store_now(&lease, &SavedTower::new(&t, &kp).unwrap())
        .unwrap();
    (kp, t)
}

#[test]
fn show_prints_votes_lockouts_and_lock_holder_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let (kp, t) = stored(dir.path());
    let id = kp.pubkey().to_string();
    let d = dir.path().to_str().unwrap();
    let out = tower_cmd(&[
        "show",
        "--identity",
        &id,
        "--tower-storage",
        "file",
        "--tower",
        d,
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["identity"], id.as_str());
    assert_eq!(v["tower"]["lastVote"], 20);
    let votes = v["tower"]["votes"].as_array().unwrap();
    assert_eq!(votes.len(), t.votes().len());
    for (j, l) in votes.iter().zip(t.votes()) {
        assert_eq!(j["slot"], l.slot);
        assert_eq!(j["confirmationCount"], l.confirmation_count);
        assert_eq!(j["lockout"], l.lockout());
    }
    assert_eq!(v["lock"]["revision"], 1);
    assert_eq!(v["lock"]["owner"]["reason"], "startup");

    let out = tower_cmd(&["show", "--identity", &id, "--tower", d]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("last vote:  20"), "{text}");
    assert!(text.contains("revision"), "{text}");
}

#[test]
fn show_reports_a_tampered_tower_and_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let (kp, _) = stored(dir.path());
    let id = kp.pubkey().to_string();
    let d = dir.path().to_str().unwrap();
    let path = FileTowerStorage::new(dir.path())
        .unwrap()
        .tower_path(&kp.pubkey());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let out = tower_cmd(&["show", "--identity", &id, "--tower", d]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("signature") && err.contains(&id), "{err}");

    let other = Keypair::from_secret(&[43; 32]).pubkey().to_string();
    let out = tower_cmd(&["show", "--identity", &other, "--tower", d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tower is stored"));
}

#[test]
fn history_lists_every_acquire() {
    let dir = tempfile::tempdir().unwrap();
    let (kp, _) = stored(dir.path());
    let s = FileTowerStorage::new(dir.path()).unwrap();
    s.acquire_now(
        &kp.pubkey(),
        LockOwner::for_this_process(kp.pubkey(), "set-identity"),
    )
    .unwrap();
    let id = kp.pubkey().to_string();
    let out = tower_cmd(&[
        "history",
        "--identity",
        &id,
        "--tower",
        dir.path().to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let reasons: Vec<_> = v
        .iter()
        .map(|r| r["owner"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["startup", "set-identity"]);
}

#[test]
fn etcd_storage_without_certs_is_a_clear_error() {
    let out = tower_cmd(&[
        "show",
        "--identity",
        "11111111111111111111111111111111",
        "--tower-storage",
        "etcd",
        "--etcd-endpoint",
        "127.0.0.1:1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--etcd-cacert-file"), "{err}");
}

#[test]
fn show_reports_etcd_size_quota_and_alarms() {
    let cluster = huione_testkit::EtcdCluster::start(1).expect("start etcd");
    let kp = Keypair::from_secret(&[43; 32]);
    let tls = cluster.tls();
    let mut config = huione_tower_storage::EtcdConfig::new(
        cluster.client_endpoints(),
        tls.ca_file,
        tls.cert_file,
        tls.key_file,
    );
    config.domain_name = tls.domain_name;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use huione_tower_storage::TowerStorage;
        let s = huione_tower_storage::EtcdTowerStorage::connect(config)
            .await
            .unwrap();
        let lease = s
            .acquire(
                &kp.pubkey(),
                LockOwner::for_this_process(kp.pubkey(), "startup"),
            )
            .await
            .unwrap();
        let mut t = Tower::new(kp.pubkey());
        t.record_vote(5, [1; 32], 1_000);
        s.store(&lease, &SavedTower::new(&t, &kp).unwrap())
            .await
            .unwrap();
    });
    let id = kp.pubkey().to_string();
    let mut args = vec!["show".to_string(), "--identity".into(), id];
    args.extend(cluster.validator_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tower_cmd(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("etcd db:") && text.contains("in use"),
        "{text}"
    );
    assert!(text.contains("etcd alarm: none"), "{text}");

    let mut json_args = args.clone();
    json_args.extend(["--output", "json"]);
    let out = tower_cmd(&json_args);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["etcd"]["dbSizeBytes"].as_i64().unwrap() > 0, "{v}");
    assert!(v["etcd"]["revision"].as_i64().unwrap() >= 3, "{v}");
    assert_eq!(v["etcd"]["alarms"], serde_json::json!([]), "{v}");
}
