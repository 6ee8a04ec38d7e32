//! EtcdTowerStorage against real etcd under faults: killed, frozen (SIGSTOP) and restarted
//! members, and misconfigurations whose errors must name the endpoint or file and the fix.
//!
//! Timing is asserted loosely ("within the deadline + 2 s"); measured times are printed
//! (run with `--nocapture` to see them).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use huione_keys::Keypair;
use huione_testkit::{ClientTls, EtcdCluster};
use huione_tower::{SavedTower, Tower};
use huione_tower_storage::{
    EtcdConfig, EtcdTowerStorage, Lease, LockOwner, StorageError, TowerStorage,
};

/// Slack over the configured deadline for a call to give up.
const MARGIN: Duration = Duration::from_secs(2);

fn config_for(endpoints: Vec<String>, tls: ClientTls) -> EtcdConfig {
    let mut config = EtcdConfig::new(endpoints, tls.ca_file, tls.cert_file, tls.key_file);
    config.domain_name = tls.domain_name;
    config
}

fn cluster_config(cluster: &EtcdCluster) -> EtcdConfig {
    config_for(cluster.client_endpoints(), cluster.tls())
}

fn keypair(seed: u8) -> Keypair {
    Keypair::from_secret(&[seed; 32])
}

fn saved(kp: &Keypair, slot: u64) -> SavedTower {
    let mut t = Tower::new(kp.pubkey());
    t.record_vote(slot, [slot as u8; 32], 1_000 + slot);
    SavedTower::new(&t, kp).expect("own tower signs")
}

async fn connect(config: EtcdConfig) -> EtcdTowerStorage {
    EtcdTowerStorage::connect(config)
        .await
        .expect("connect to the test etcd")
}

async fn acquire(s: &EtcdTowerStorage, kp: &Keypair) -> Lease {
    s.acquire(
        &kp.pubkey(),
        LockOwner::for_this_process(kp.pubkey(), "test"),
    )
    .await
    .expect("acquire")
}

/// Stores `count` towers, each of which must succeed within the deadline + margin.
/// Returns the latencies.
async fn stores_succeed(
    s: &EtcdTowerStorage,
    lease: &Lease,
    kp: &Keypair,
    slot: &mut u64,
    count: usize,
    what: &str,
) -> Vec<Duration> {
    let bound = s.config().deadline + MARGIN;
    let mut latencies = Vec::new();
    for _ in 0..count {
        *slot += 1;
        let t = Instant::now();
        let result = s.store(lease, &saved(kp, *slot)).await;
        let took = t.elapsed();
        if let Err(e) = &result {
            panic!("{what}: store of slot {slot} failed after {took:?}: {e}");
        }
        assert!(
            took <= bound,
            "{what}: store took {took:?} (bound {bound:?})"
        );
        latencies.push(took);
    }
    let stored = s
        .load_verified(&kp.pubkey())
        .await
        .expect("load after stores")
        .expect("a tower is stored");
    assert_eq!(
        stored.last_voted_slot(),
        Some(*slot),
        "{what}: the last store is visible"
    );
    latencies
}

fn summary(latencies: &[Duration]) -> String {
    let mut l = latencies.to_vec();
    l.sort();
    if l.is_empty() {
        return "no samples".into();
    }
    format!(
        "n={} min={:?} p50={:?} max={:?}",
        l.len(),
        l[0],
        l[l.len() / 2],
        l[l.len() - 1]
    )
}

/// A 3-member cluster survives killing a follower, then the leader (a new one is elected):
/// stores keep succeeding within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_stores_survive_killed_follower_and_leader() {
    let mut cluster = EtcdCluster::start(3).expect("start a 3-member etcd cluster");
    let s = connect(cluster_config(&cluster)).await;
    let kp = keypair(31);
    let lease = acquire(&s, &kp).await;
    let mut slot = 0;
    let base = stores_succeed(&s, &lease, &kp, &mut slot, 20, "healthy").await;
    eprintln!("3 members, healthy: store latency {}", summary(&base));

    let leader = cluster.leader_index().expect("a leader");
    let follower = (0..3).find(|i| *i != leader).unwrap_or(0);
    cluster.kill(follower);
    let l = stores_succeed(&s, &lease, &kp, &mut slot, 10, "follower killed").await;
    eprintln!("follower m{follower} killed: store latency {}", summary(&l));
    cluster.restart(follower).expect("restart the follower");

    let leader = cluster.leader_index().expect("a leader");
    let t = Instant::now();
    cluster.kill(leader);
    let l = stores_succeed(&s, &lease, &kp, &mut slot, 10, "leader killed").await;
    eprintln!(
        "leader m{leader} killed: first store {:?}, store latency {}, all done {:?} after the kill",
        l[0],
        summary(&l),
        t.elapsed()
    );
}

/// A 3-member cluster with one member frozen (SIGSTOP: its sockets stay open, it answers
/// nothing), each member in turn, the leader included: stores keep succeeding within the
/// deadline, because each attempt is bounded and the next goes to another member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_stores_survive_a_frozen_member() {
    let cluster = EtcdCluster::start(3).expect("start a 3-member etcd cluster");
    let s = connect(cluster_config(&cluster)).await;
    let kp = keypair(32);
    let lease = acquire(&s, &kp).await;
    let mut slot = 0;
    stores_succeed(&s, &lease, &kp, &mut slot, 5, "healthy").await;
    for i in 0..3 {
        let was_leader = cluster.leader_index() == Some(i);
        cluster.freeze(i);
        let l = stores_succeed(&s, &lease, &kp, &mut slot, 10, &format!("m{i} frozen")).await;
        eprintln!(
            "m{i} frozen{}: first store {:?}, store latency {}",
            if was_leader { " (the leader)" } else { "" },
            l[0],
            summary(&l)
        );
        cluster.thaw(i);
        cluster
            .wait_for_leader(Duration::from_secs(10))
            .expect("a leader after the thaw");
        stores_succeed(&s, &lease, &kp, &mut slot, 3, &format!("m{i} thawed")).await;
    }
}

/// A single etcd frozen with SIGSTOP: stores fail with Unavailable (transient) within the
/// deadline (+ margin), never hang; after the thaw stores work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_single_etcd_is_unavailable_then_recovers() {
    let cluster = EtcdCluster::start(1).expect("start etcd");
    let s = connect(cluster_config(&cluster)).await;
    let kp = keypair(33);
    let lease = acquire(&s, &kp).await;
    let mut slot = 0;
    stores_succeed(&s, &lease, &kp, &mut slot, 3, "healthy").await;

    cluster.freeze(0);
    let bound = s.config().deadline + MARGIN;
    for call in 0..2 {
        let t = Instant::now();
        let err = s.store(&lease, &saved(&kp, 1000 + call)).await.unwrap_err();
        let took = t.elapsed();
        eprintln!("frozen etcd: store failed after {took:?}: {err}");
        assert!(took <= bound, "store took {took:?} (bound {bound:?})");
        assert!(err.is_transient() && !err.is_lock_lost(), "{err}");
        assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains(&cluster.endpoint(0)), "{err}");
    }
    let t = Instant::now();
    let err = s.load(&kp.pubkey()).await.unwrap_err();
    assert!(err.is_transient() && t.elapsed() <= bound, "{err}");
    let t = Instant::now();
    let err = s
        .acquire(
            &kp.pubkey(),
            LockOwner::for_this_process(kp.pubkey(), "test"),
        )
        .await
        .unwrap_err();
    assert!(err.is_transient() && t.elapsed() <= bound, "{err}");

    cluster.thaw(0);
    let t = Instant::now();
    let l = stores_succeed(&s, &lease, &kp, &mut slot, 5, "thawed").await;
    eprintln!(
        "after the thaw: first store {:?}, latency {}, total {:?}",
        l[0],
        summary(&l),
        t.elapsed()
    );
}

/// etcd killed and restarted: stores fail (transient) while it is down and recover after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_etcd_recovers() {
    let mut cluster = EtcdCluster::start(1).expect("start etcd");
    let s = connect(cluster_config(&cluster)).await;
    let kp = keypair(34);
    let lease = acquire(&s, &kp).await;
    let mut slot = 0;
    stores_succeed(&s, &lease, &kp, &mut slot, 3, "healthy").await;

    cluster.kill(0);
    let t = Instant::now();
    let err = s.store(&lease, &saved(&kp, 500)).await.unwrap_err();
    let took = t.elapsed();
    eprintln!("killed etcd: store failed after {took:?}: {err}");
    assert!(err.is_transient(), "{err}");
    assert!(took <= s.config().deadline + MARGIN, "took {took:?}");

    cluster.restart(0).expect("restart etcd");
    let t = Instant::now();
    let l = stores_succeed(&s, &lease, &kp, &mut slot, 5, "restarted").await;
    eprintln!(
        "after the restart: first store {:?}, latency {}, total {:?}",
        l[0],
        summary(&l),
        t.elapsed()
    );
    // The lease survived the restart: the lock key is durable.
    let holder = s.lock_holder(&kp.pubkey()).await.unwrap().unwrap();
    assert_eq!(holder.revision, lease.revision());
}

/// The stored values are plain etcd keys an operator can inspect with etcdctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_keys_are_visible_to_etcdctl() {
    let cluster = EtcdCluster::start(1).expect("start etcd");
    let s = connect(cluster_config(&cluster)).await;
    let kp = keypair(35);
    let lease = acquire(&s, &kp).await;
    s.store(&lease, &saved(&kp, 7)).await.unwrap();
    let id = kp.pubkey();
    let keys = cluster
        .etcdctl(&["get", "--prefix", "/huione", "--keys-only"])
        .expect("etcdctl get");
    for key in [format!("/huione/tower/{id}"), format!("/huione/lock/{id}")] {
        assert!(keys.lines().any(|l| l == key), "{key} missing in:\n{keys}");
    }
    // One audit key per acquire: `<instance id>-<n>`.
    let audit = format!("/huione/audit/{id}/{}-", lease.owner().instance_id);
    assert!(
        keys.lines().any(|l| l.starts_with(&audit)),
        "{audit}* missing in:\n{keys}"
    );
    let lock = cluster
        .etcdctl(&["get", "--print-value-only", &format!("/huione/lock/{id}")])
        .unwrap();
    assert!(lock.contains(&lease.owner().instance_id), "{lock}");
    // The lock key's mod_revision is the fencing token.
    let json = cluster
        .etcdctl(&["get", "-w", "json", &format!("/huione/lock/{id}")])
        .unwrap();
    assert!(
        json.contains(&format!("\"mod_revision\":{}", lease.revision())),
        "{json}"
    );
    let tower = cluster
        .etcdctl(&["get", "--print-value-only", &format!("/huione/tower/{id}")])
        .unwrap();
    assert!(tower.starts_with("HUITOWER"), "{tower:?}");
}

async fn connect_err(config: EtcdConfig) -> (StorageError, Duration) {
    let t = Instant::now();
    match EtcdTowerStorage::connect(config).await {
        Ok(_) => panic!("connect succeeded"),
        Err(e) => (e, t.elapsed()),
    }
}

fn assert_config(err: &StorageError, needles: &[&str]) {
    let text = err.to_string();
    assert!(
        matches!(err, StorageError::Config(_)),
        "not a Config error: {text}"
    );
    for n in needles {
        assert!(text.contains(n), "{n:?} missing in: {text}");
    }
}

fn write(dir: &std::path::Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// Every misconfiguration gives an error that names the endpoint or file and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfiguration_errors_name_the_fix() {
    let cluster = EtcdCluster::start(1).expect("start etcd");
    let ep = cluster.endpoint(0);
    let bound = EtcdConfig::new(vec![], "".into(), "".into(), "".into()).deadline + MARGIN;
    let dir = tempfile::tempdir().unwrap();

    // Wrong domain name.
    let mut c = cluster_config(&cluster);
    c.domain_name = "etcd.example.org".into();
    let (err, took) = connect_err(c).await;
    eprintln!("wrong domain ({took:?}): {err}");
    assert_config(
        &err,
        &[&ep, "does not carry --etcd-domain-name etcd.example.org"],
    );
    assert!(took <= bound);

    // A CA that did not sign the server certificate.
    let foreign = huione_certs::generate_foreign_ca_client("validator").unwrap();
    let mut c = cluster_config(&cluster);
    c.ca_file = write(dir.path(), "other-ca.pem", &foreign.ca.cert_pem);
    let (err, took) = connect_err(c).await;
    eprintln!("untrusted server ({took:?}): {err}");
    assert_config(
        &err,
        &[&ep, "is etcd.pem signed by etcd-ca.pem?", "other-ca.pem"],
    );
    assert!(took <= bound);

    // A client certificate from a CA etcd does not trust: the server rejects it.
    let (err, took) = connect_err(config_for(
        cluster.client_endpoints(),
        cluster.foreign_client_tls().unwrap(),
    ))
    .await;
    eprintln!("foreign client cert ({took:?}): {err}");
    assert_config(
        &err,
        &[
            &ep,
            "rejected the client certificate",
            "foreign-client.pem",
            "--trusted-ca-file",
        ],
    );
    assert!(took <= bound);

    // An expired client certificate: the file, its expiry date and the fix.
    let expired = cluster.expired_client_tls().unwrap();
    let not_after = huione_certs::inspect(&expired.cert_file).unwrap()[0].not_after;
    let (err, _) = connect_err(config_for(cluster.client_endpoints(), expired)).await;
    eprintln!("expired client cert: {err}");
    assert_config(
        &err,
        &[
            "expired-client.pem",
            "--etcd-cert-file",
            "expired on",
            &huione_certs::utc(not_after),
            "huione-certs renew",
        ],
    );

    // Missing files, each naming its flag.
    let missing = dir.path().join("nope.pem");
    for (flag, set) in [
        ("--etcd-cacert-file", 0),
        ("--etcd-cert-file", 1),
        ("--etcd-key-file", 2),
    ] {
        let mut c = cluster_config(&cluster);
        match set {
            0 => c.ca_file = missing.clone(),
            1 => c.cert_file = missing.clone(),
            _ => c.key_file = missing.clone(),
        }
        let (err, _) = connect_err(c).await;
        eprintln!("missing {flag}: {err}");
        assert_config(&err, &[flag, "nope.pem", "does not exist"]);
    }

    // Not PEM, and key and certificate swapped.
    let mut c = cluster_config(&cluster);
    c.ca_file = write(dir.path(), "garbage.pem", "not a certificate\n");
    let (err, _) = connect_err(c).await;
    eprintln!("garbage CA: {err}");
    assert_config(&err, &["--etcd-cacert-file", "garbage.pem"]);
    let tls = cluster.tls();
    let mut c = cluster_config(&cluster);
    c.cert_file = tls.key_file.clone();
    c.key_file = tls.cert_file.clone();
    let (err, _) = connect_err(c).await;
    eprintln!("swapped cert/key: {err}");
    assert_config(&err, &["--etcd-cert-file", "validator-key.pem"]);

    // Plain http.
    let (err, _) = connect_err(config_for(vec![format!("http://{ep}")], cluster.tls())).await;
    eprintln!("http: {err}");
    assert_config(&err, &["plain http"]);
}

/// A closed loopback port: Unavailable naming the endpoint, quickly; with a second, live
/// endpoint the storage connects and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_is_named() {
    let cluster = EtcdCluster::start(1).expect("start etcd");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let c = config_for(vec![closed.clone()], cluster.tls());
    let bound = c.deadline + MARGIN;
    let (err, took) = connect_err(c).await;
    eprintln!("closed port ({took:?}): {err}");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(&closed) && text.contains("connection refused"),
        "{text}"
    );
    assert!(took <= bound, "took {took:?}");

    // One dead endpoint among live ones does not stop us.
    let s = connect(config_for(
        vec![closed.clone(), cluster.endpoint(0)],
        cluster.tls(),
    ))
    .await;
    let kp = keypair(36);
    let lease = acquire(&s, &kp).await;
    let mut slot = 0;
    stores_succeed(&s, &lease, &kp, &mut slot, 3, "one dead endpoint").await;
}

/// A store sent to a member that froze before answering has an unknown outcome: it is
/// reported as Unavailable, and it must never apply later on top of a newer tower stored
/// through another member (the newer tower holds votes already sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_store_attempt_cannot_overwrite_a_newer_tower() {
    let cluster = EtcdCluster::start(3).expect("start a 3-member etcd cluster");
    // Two clients with the same lease, each bound to one member.
    let x = connect(config_for(vec![cluster.endpoint(0)], cluster.tls())).await;
    let y = connect(config_for(vec![cluster.endpoint(1)], cluster.tls())).await;
    let kp = keypair(37);
    let lease = acquire(&x, &kp).await;
    x.store(&lease, &saved(&kp, 1)).await.unwrap();

    // m0 is frozen with our store of slot 2 in its socket buffer.
    let wait_leader = || {
        cluster
            .wait_for_leader(Duration::from_secs(10))
            .expect("a leader")
    };
    if cluster.leader_index() == Some(0) {
        // Keep m0 a follower so the others can go on while it is frozen.
        cluster
            .etcdctl_member(0, &["move-leader", &member_id(&cluster, 1)])
            .expect("move the leader away from m0");
        wait_leader();
    }
    cluster.freeze(0);
    let err = x.store(&lease, &saved(&kp, 2)).await.unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
    eprintln!("store via frozen m0: {err}");

    // Meanwhile slot 3 is stored through m1 (and its vote would be sent).
    wait_leader();
    y.store(&lease, &saved(&kp, 3))
        .await
        .expect("store through m1");

    // m0 wakes up and processes whatever it had buffered.
    cluster.thaw(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in [&x, &y] {
        let t = s.load_verified(&kp.pubkey()).await.unwrap().unwrap();
        assert_eq!(
            t.last_voted_slot(),
            Some(3),
            "a late store overwrote a newer tower"
        );
    }
    // And x can go on storing with its lease.
    x.store(&lease, &saved(&kp, 4))
        .await
        .expect("store after the thaw");
    let t = y.load_verified(&kp.pubkey()).await.unwrap().unwrap();
    assert_eq!(t.last_voted_slot(), Some(4));
}

/// Member `i`'s id in hex, as `etcdctl move-leader` wants it.
fn member_id(cluster: &EtcdCluster, i: usize) -> String {
    let out = cluster
        .etcdctl_member(i, &["endpoint", "status", "--write-out=fields"])
        .expect("endpoint status");
    let id: u64 = out
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(" : ")?;
            (k.trim().trim_matches('"') == "MemberID").then(|| v.trim().parse().ok())?
        })
        .expect("MemberID in endpoint status");
    format!("{id:x}")
}
