//! etcd stays bounded under huione's own compaction, and a full etcd (NOSPACE alarm) is a
//! clear error naming the fix, against real etcd servers started with a small quota.
//!
//! Run with `--nocapture` to see the measured figures.

use std::time::{Duration, Instant};

use huione_keys::Keypair;
use huione_testkit::EtcdCluster;
use huione_tower::{SavedTower, Tower, MAX_LOCKOUT_HISTORY};
use huione_tower_storage::{
    CompactionPolicy, EtcdConfig, EtcdTowerStorage, Lease, LockOwner, StorageError, TowerStorage,
};

/// A small quota: etcd raises NOSPACE once its database file passes 2 MiB (about 3,500
/// revisions of a full tower).
const QUOTA_BYTES: u64 = 2 * 1024 * 1024;

fn config(cluster: &EtcdCluster, compaction: Option<CompactionPolicy>) -> EtcdConfig {
    let tls = cluster.tls();
    let mut config = EtcdConfig::new(
        cluster.client_endpoints(),
        tls.ca_file,
        tls.cert_file,
        tls.key_file,
    );
    config.domain_name = tls.domain_name;
    config.compaction = compaction;
    config
}

fn keypair(seed: u8) -> Keypair {
    Keypair::from_secret(&[seed; 32])
}

/// The biggest tower there is: a full vote stack ending at `slot`.
fn big_tower(kp: &Keypair, slot: u64) -> SavedTower {
    let mut t = Tower::new(kp.pubkey());
    let first = slot.saturating_sub(MAX_LOCKOUT_HISTORY as u64 - 1).max(1);
    for s in first..=slot.max(first) {
        t.record_vote(s, [s as u8; 32], 1_000 + s);
    }
    SavedTower::new(&t, kp).expect("own tower signs")
}

async fn acquire(s: &EtcdTowerStorage, kp: &Keypair) -> Lease {
    s.acquire(
        &kp.pubkey(),
        LockOwner::for_this_process(kp.pubkey(), "test"),
    )
    .await
    .expect("acquire")
}

/// Writers storing towers of their own identity in a tight loop (etcd batches concurrent
/// writes into one fsync): together `total` stores. Every store must succeed.
async fn store_many(s: &EtcdTowerStorage, writers: u8, total: u64) -> u64 {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let s = s.clone();
        tasks.spawn(async move {
            let kp = keypair(100 + w);
            let lease = acquire(&s, &kp).await;
            // Signed once: signing dominates in a debug build, and storing the same tower
            // again writes a new revision all the same.
            let tower = big_tower(&kp, 1_000 + w as u64);
            let size = tower.to_bytes().len() as u64;
            let mut bytes = 0u64;
            for slot in 1..=total / writers as u64 {
                bytes += size;
                if let Err(e) = s.store(&lease, &tower).await {
                    panic!("writer {w}: store of slot {slot} failed: {e}");
                }
            }
            bytes
        });
    }
    let mut bytes = 0;
    while let Some(r) = tasks.join_next().await {
        bytes += r.expect("writer task");
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_etcd_under_a_small_quota() {
    let cluster = EtcdCluster::start_with_quota(1, QUOTA_BYTES).expect("start etcd");
    // Compacting often, so that a few seconds of stores go through many compactions.
    let policy = CompactionPolicy {
        every_stores: 200,
        every: Duration::from_secs(60),
        keep_revisions: 200,
    };
    let s = EtcdTowerStorage::connect(config(&cluster, Some(policy)))
        .await
        .expect("connect");
    let before = s.server_status().await.expect("status");
    let started = Instant::now();
    // Stores until the towers written add up to four times the quota.
    let mut written = 0u64;
    let mut stores = 0u64;
    while written < 4 * QUOTA_BYTES {
        written += store_many(&s, 8, 4000).await;
        stores += 4000;
    }
    let took = started.elapsed();
    // The primary still stores at the end.
    let kp = keypair(99);
    let lease = acquire(&s, &kp).await;
    s.store(&lease, &big_tower(&kp, 1_000_000))
        .await
        .expect("a store after many quotas' worth of stores");
    let after = s.server_status().await.expect("status");
    println!(
        "{stores} stores ({written} bytes of towers, {:.1}x the quota) in {took:?}: etcd database \
         {} -> {} bytes ({} in use), revision {}, compacted to {:?}",
        written as f64 / QUOTA_BYTES as f64,
        before.db_size_bytes,
        after.db_size_bytes,
        after.db_size_in_use_bytes,
        after.revision,
        after.compacted_revision
    );
    assert!(after.alarms.is_empty(), "alarms: {:?}", after.alarms);
    assert_eq!(after.quota_bytes, Some(QUOTA_BYTES as i64), "{after:?}");
    assert!(
        (after.db_size_bytes as u64) < QUOTA_BYTES,
        "etcd's database grew to {} bytes (quota {QUOTA_BYTES})",
        after.db_size_bytes
    );
    let compacted = after.compacted_revision.expect("the storage compacted");
    assert!(
        compacted >= after.revision - 2 * (policy.every_stores as i64 + policy.keep_revisions),
        "compacted to {compacted}, revision {}: compaction fell behind",
        after.revision
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_etcd_is_a_clear_error_naming_the_fix() {
    let cluster = EtcdCluster::start_with_quota(1, QUOTA_BYTES).expect("start etcd");
    // No compaction: what every version before this one did.
    let s = EtcdTowerStorage::connect(config(&cluster, None))
        .await
        .expect("connect");
    let kp = keypair(7);
    let lease = acquire(&s, &kp).await;
    let tower = big_tower(&kp, 500);
    let started = Instant::now();
    let mut stores = 0u64;
    let err = loop {
        match s.store(&lease, &tower).await {
            Ok(_) => stores += 1,
            Err(e) => break e,
        }
        assert!(
            stores < 40 * QUOTA_BYTES / 500,
            "etcd took {stores} stores without reaching its {QUOTA_BYTES}-byte quota"
        );
    };
    println!(
        "NOSPACE after {stores} stores in {:?}: {err}",
        started.elapsed()
    );
    assert!(matches!(err, StorageError::NoSpace { .. }), "{err}");
    assert!(err.is_transient() && !err.is_lock_lost(), "{err}");
    let text = err.to_string();
    for needle in [
        "NOSPACE",
        "--quota-backend-bytes",
        "etcdctl compact",
        "etcdctl defrag",
        "etcdctl alarm disarm",
        &cluster.client_urls()[0],
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    // Refused at once, not retried until the deadline as if etcd were unreachable.
    let t = Instant::now();
    let again = s.store(&lease, &tower).await.unwrap_err();
    assert!(matches!(again, StorageError::NoSpace { .. }), "{again}");
    assert!(t.elapsed() < s.config().deadline, "took {:?}", t.elapsed());
    let status = s
        .server_status()
        .await
        .expect("status is readable under NOSPACE");
    assert!(status.no_space(), "{status:?}");
    let summary = status.alarm_summary().expect("an alarm summary");
    assert!(
        summary.contains("NOSPACE") && summary.contains("alarm disarm"),
        "{summary}"
    );

    // The fix the message names, step by step; then the same lease stores again.
    s.compact(0).await.expect("compaction works under NOSPACE");
    cluster.etcdctl(&["defrag"]).expect("etcdctl defrag");
    cluster
        .etcdctl(&["alarm", "disarm"])
        .expect("etcdctl alarm disarm");
    s.store(&lease, &tower)
        .await
        .expect("stores work again after compact + defrag + disarm");
    let status = s.server_status().await.expect("status");
    assert!(status.alarms.is_empty(), "{status:?}");
    assert!(
        (status.db_size_bytes as u64) < QUOTA_BYTES / 2,
        "{status:?}"
    );
}
