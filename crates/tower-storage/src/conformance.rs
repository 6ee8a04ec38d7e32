//! The conformance suite every [`TowerStorage`] implementation passes unchanged.
//!
//! A backend provides a [`Fixture`]: a way to open another client to the same backing
//! store (another process, as far as the lock is concerned) and a way to write raw bytes
//! where the tower lives (to tamper with it). [`conformance_tests!`](crate::conformance_tests)
//! expands to one `#[tokio::test]` per case.

use std::future::Future;

use huione_keys::{Keypair, Pubkey};
use huione_tower::{SavedTower, Tower, TowerError};

use crate::{Lease, LockOwner, StorageError, TowerStorage};

/// A backing store under test.
pub trait Fixture {
    type Storage: TowerStorage;
    /// A new, independent client of the same backing store.
    fn open(&self) -> impl Future<Output = Self::Storage>;
    /// Writes `bytes` where `identity`'s tower is stored, bypassing the lock.
    fn put_raw_tower(&self, identity: &Pubkey, bytes: &[u8]) -> impl Future<Output = ()>;
    /// Drops every superseded version of every key, as etcd's compaction to its current
    /// revision does, and checks that it did. Stores that keep only the latest version
    /// (the in-memory model, the file) have nothing to drop.
    fn compact_history(&self) -> impl Future<Output = ()> {
        async {}
    }
}

/// Expands to one `#[tokio::test]` per conformance case. `$fixture` is an expression
/// that makes a fresh fixture (it is evaluated once per test).
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@case $fixture;
            round_trip, missing_tower, tampered_tower_is_rejected,
            wrong_identity_is_rejected, store_fails_after_another_instance_acquires,
            racing_acquirers_only_the_later_writes, reacquire_fences_the_old_lease,
            history_records_every_acquire, compaction_keeps_fencing_and_history,
            history_keeps_every_acquire_of_one_instance, release_is_fenced_and_recorded,
            finished_is_recorded_without_moving_the_fence, an_own_acquire_is_adopted_from_the_holder);
    };
    (@case $fixture:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture;
                $crate::conformance::$name(&fixture).await;
            }
        )*
    };
}

fn keypair(seed: u8) -> Keypair {
    Keypair::from_secret(&[seed; 32])
}

fn tower_with(kp: &Keypair, slots: &[u64]) -> Tower {
    let mut t = Tower::new(kp.pubkey());
    for &s in slots {
        t.record_vote(s, [s as u8; 32], 1_000 + s);
    }
    t
}

fn saved(kp: &Keypair, slots: &[u64]) -> SavedTower {
    SavedTower::new(&tower_with(kp, slots), kp).expect("own tower signs")
}

fn owner(kp: &Keypair, reason: &str) -> LockOwner {
    LockOwner::for_this_process(kp.pubkey(), reason)
}

pub async fn round_trip<F: Fixture>(f: &F) {
    let s = f.open().await;
    let kp = keypair(11);
    let lease = s.acquire(&kp.pubkey(), owner(&kp, "test")).await.unwrap();
    let first = saved(&kp, &[1, 2, 3]);
    let receipt = s.store(&lease, &first).await.unwrap();
    let got = s.load_verified(&kp.pubkey()).await.unwrap().unwrap();
    assert_eq!(got, tower_with(&kp, &[1, 2, 3]));
    // The receipt is bound to the lease and to the bytes written (and only to them).
    assert_eq!(receipt.identity(), kp.pubkey());
    assert_eq!(receipt.lease_revision(), lease.revision());
    assert!(receipt.revision() >= lease.revision());
    let stored = s.load(&kp.pubkey()).await.unwrap().unwrap();
    receipt
        .covers(&kp.pubkey(), lease.revision(), &stored)
        .unwrap();
    let second = saved(&kp, &[1, 2, 3, 4, 9]);
    assert!(receipt
        .covers(&kp.pubkey(), lease.revision(), &second)
        .is_err());
    assert!(receipt
        .covers(&kp.pubkey(), lease.revision() + 1, &first)
        .is_err());
    assert!(receipt
        .covers(&keypair(99).pubkey(), lease.revision(), &first)
        .is_err());
    let receipt2 = s.store(&lease, &second).await.unwrap();
    receipt2
        .covers(&kp.pubkey(), lease.revision(), &second)
        .unwrap();
    assert_ne!(receipt2.digest(), receipt.digest());
    let got = s.load_verified(&kp.pubkey()).await.unwrap().unwrap();
    assert_eq!(got, tower_with(&kp, &[1, 2, 3, 4, 9]));
    // Another client sees the same tower.
    let other = f.open().await;
    assert_eq!(other.load_verified(&kp.pubkey()).await.unwrap(), Some(got));
}

pub async fn missing_tower<F: Fixture>(f: &F) {
    let s = f.open().await;
    let id = keypair(12).pubkey();
    assert!(s.load(&id).await.unwrap().is_none());
    assert!(s.load_verified(&id).await.unwrap().is_none());
    assert!(s.lock_holder(&id).await.unwrap().is_none());
    assert!(s.history(&id).await.unwrap().is_empty());
}

pub async fn tampered_tower_is_rejected<F: Fixture>(f: &F) {
    let s = f.open().await;
    let kp = keypair(13);
    let lease = s.acquire(&kp.pubkey(), owner(&kp, "test")).await.unwrap();
    s.store(&lease, &saved(&kp, &[5, 6])).await.unwrap();
    let good = s.load(&kp.pubkey()).await.unwrap().unwrap().to_bytes();

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    f.put_raw_tower(&kp.pubkey(), &flipped).await;
    let err = s.load_verified(&kp.pubkey()).await.unwrap_err();
    assert!(
        matches!(err, StorageError::Tower(TowerError::BadSignature)),
        "{err}"
    );

    f.put_raw_tower(&kp.pubkey(), b"definitely not a tower")
        .await;
    let err = s.load_verified(&kp.pubkey()).await.unwrap_err();
    assert!(
        matches!(err, StorageError::Tower(TowerError::Malformed(_))),
        "{err}"
    );

    f.put_raw_tower(&kp.pubkey(), &good[..good.len() / 2]).await;
    assert!(matches!(
        s.load_verified(&kp.pubkey()).await,
        Err(StorageError::Tower(_))
    ));
}

pub async fn wrong_identity_is_rejected<F: Fixture>(f: &F) {
    let s = f.open().await;
    let a = keypair(14);
    let b = keypair(15);
    // B's genuine tower, put where A's tower lives.
    f.put_raw_tower(&a.pubkey(), &saved(&b, &[7]).to_bytes())
        .await;
    let err = s.load_verified(&a.pubkey()).await.unwrap_err();
    assert!(
        matches!(err, StorageError::Tower(TowerError::WrongIdentity { .. })),
        "{err}"
    );
    // Storing B's tower under A's lease is refused before anything is written.
    let lease = s.acquire(&a.pubkey(), owner(&a, "test")).await.unwrap();
    let err = s.store(&lease, &saved(&b, &[8])).await.unwrap_err();
    assert!(
        matches!(err, StorageError::Tower(TowerError::WrongIdentity { .. })),
        "{err}"
    );
}

pub async fn store_fails_after_another_instance_acquires<F: Fixture>(f: &F) {
    let primary = f.open().await;
    let secondary = f.open().await;
    let kp = keypair(16);
    let id = kp.pubkey();
    let ours = primary.acquire(&id, owner(&kp, "startup")).await.unwrap();
    primary.store(&ours, &saved(&kp, &[1, 2])).await.unwrap();

    let theirs = secondary
        .acquire(&id, owner(&kp, "set-identity"))
        .await
        .unwrap();
    assert!(
        theirs.revision() > ours.revision(),
        "fencing tokens increase"
    );

    let err = primary
        .store(&ours, &saved(&kp, &[1, 2, 3]))
        .await
        .unwrap_err();
    assert!(err.is_lock_lost() && !err.is_transient(), "{err}");
    match &err {
        StorageError::LockLost(lost) => {
            assert_eq!(lost.ours, ours.revision());
            let holder = lost.holder.as_ref().expect("the new holder is reported");
            assert_eq!(holder.owner.instance_id, theirs.owner().instance_id);
            assert_eq!(holder.revision, theirs.revision());
        }
        other => panic!("expected LockLost, got {other}"),
    }
    // The stored tower is untouched by the failed store.
    assert_eq!(
        secondary.load_verified(&id).await.unwrap(),
        Some(tower_with(&kp, &[1, 2]))
    );
    secondary
        .store(&theirs, &saved(&kp, &[1, 2, 4]))
        .await
        .unwrap();
    assert_eq!(
        primary.load_verified(&id).await.unwrap(),
        Some(tower_with(&kp, &[1, 2, 4]))
    );
    let holder = primary.lock_holder(&id).await.unwrap().unwrap();
    assert_eq!(holder.owner, *theirs.owner());
    assert_eq!(holder.revision, theirs.revision());
}

pub async fn racing_acquirers_only_the_later_writes<F: Fixture>(f: &F) {
    let kp = keypair(17);
    let id = kp.pubkey();
    for round in 0..5u64 {
        let a = f.open().await;
        let b = f.open().await;
        let (la, lb) = futures_join(
            a.acquire(&id, owner(&kp, "race-a")),
            b.acquire(&id, owner(&kp, "race-b")),
        )
        .await;
        let (la, lb) = (la.unwrap(), lb.unwrap());
        assert_ne!(la.revision(), lb.revision());
        let base = 100 * round;
        let ra = a.store(&la, &saved(&kp, &[base + 1])).await;
        let rb = b.store(&lb, &saved(&kp, &[base + 2])).await;
        let (winner_slot, winner_ok, loser_err) = if la.revision() > lb.revision() {
            (base + 1, ra.is_ok(), rb.err())
        } else {
            (base + 2, rb.is_ok(), ra.err())
        };
        assert!(winner_ok, "the later acquirer can write");
        assert!(
            loser_err.is_some_and(|e| e.is_lock_lost()),
            "the earlier acquirer is fenced"
        );
        let stored = a.load_verified(&id).await.unwrap().unwrap();
        assert_eq!(stored.last_voted_slot(), Some(winner_slot));
    }
}

pub async fn reacquire_fences_the_old_lease<F: Fixture>(f: &F) {
    let s = f.open().await;
    let kp = keypair(18);
    let old = s
        .acquire(&kp.pubkey(), owner(&kp, "startup"))
        .await
        .unwrap();
    let new = s
        .acquire(&kp.pubkey(), owner(&kp, "reclaim"))
        .await
        .unwrap();
    assert!(new.revision() > old.revision());
    assert!(s
        .store(&old, &saved(&kp, &[1]))
        .await
        .unwrap_err()
        .is_lock_lost());
    s.store(&new, &saved(&kp, &[2])).await.unwrap();
    // An identical owner record does not help a stale lease: the revision differs.
    let same_owner = s.acquire(&kp.pubkey(), new.owner().clone()).await.unwrap();
    assert!(s
        .store(&new, &saved(&kp, &[3]))
        .await
        .unwrap_err()
        .is_lock_lost());
    s.store(&same_owner, &saved(&kp, &[4])).await.unwrap();
}

pub async fn history_records_every_acquire<F: Fixture>(f: &F) {
    let s = f.open().await;
    let kp = keypair(19);
    let mut leases = Vec::new();
    for reason in ["startup", "set-identity", "reclaim"] {
        leases.push(s.acquire(&kp.pubkey(), owner(&kp, reason)).await.unwrap());
        let last = leases.last().unwrap();
        s.store(last, &saved(&kp, &[leases.len() as u64]))
            .await
            .unwrap();
    }
    let history = s.history(&kp.pubkey()).await.unwrap();
    assert_eq!(history.len(), 3);
    for (rec, lease) in history.iter().zip(&leases) {
        assert_eq!(rec.owner, *lease.owner());
        assert_eq!(rec.revision, lease.revision());
    }
    assert!(history.windows(2).all(|w| w[0].revision < w[1].revision));
    let holder = s.lock_holder(&kp.pubkey()).await.unwrap().unwrap();
    assert_eq!(holder.revision, leases[2].revision());
}

/// Compaction drops old revisions, never the current ones that fencing compares: after
/// compacting to the newest revision (below every fencing token in play), the holder still
/// stores, a fenced-out lease still gets LockLost, and the history is complete.
pub async fn compaction_keeps_fencing_and_history<F: Fixture>(f: &F) {
    let primary = f.open().await;
    let kp = keypair(20);
    let id = kp.pubkey();
    let ours = primary.acquire(&id, owner(&kp, "startup")).await.unwrap();
    for slot in 1..=20 {
        primary.store(&ours, &saved(&kp, &[slot])).await.unwrap();
    }
    f.compact_history().await;
    // The lock key was written long before the compaction revision: still ours.
    primary.store(&ours, &saved(&kp, &[21])).await.unwrap();
    assert_eq!(
        primary.load_verified(&id).await.unwrap(),
        Some(tower_with(&kp, &[21]))
    );

    let secondary = f.open().await;
    let theirs = secondary
        .acquire(&id, owner(&kp, "set-identity"))
        .await
        .unwrap();
    secondary.store(&theirs, &saved(&kp, &[22])).await.unwrap();
    f.compact_history().await;
    let err = primary.store(&ours, &saved(&kp, &[23])).await.unwrap_err();
    match &err {
        StorageError::LockLost(lost) => {
            assert_eq!(lost.ours, ours.revision());
            let holder = lost.holder.as_ref().expect("the new holder is reported");
            assert_eq!(holder.revision, theirs.revision());
        }
        other => panic!("expected LockLost after compaction, got {other}"),
    }
    secondary.store(&theirs, &saved(&kp, &[24])).await.unwrap();
    assert_eq!(
        primary.load_verified(&id).await.unwrap(),
        Some(tower_with(&kp, &[24]))
    );
    let history = primary.history(&id).await.unwrap();
    let revisions: Vec<_> = history.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, vec![ours.revision(), theirs.revision()]);
    assert_eq!(history[1].owner, *theirs.owner());
}

/// One process (one instance id, as a validator has) acquiring an identity again keeps a
/// record per acquire, each naming that instance.
pub async fn history_keeps_every_acquire_of_one_instance<F: Fixture>(f: &F) {
    let s = f.open().await;
    let kp = keypair(21);
    let instance = crate::new_instance_id();
    let mut revisions = Vec::new();
    for reason in ["startup", "set-identity", "set-identity"] {
        let owner = LockOwner::new(kp.pubkey(), &instance, reason);
        revisions.push(s.acquire(&kp.pubkey(), owner).await.unwrap().revision());
    }
    let history = s.history(&kp.pubkey()).await.unwrap();
    let got: Vec<_> = history.iter().map(|r| r.revision).collect();
    assert_eq!(got, revisions, "{history:?}");
    assert!(history.iter().all(|r| r.owner.instance_id == instance));
}

/// Polls two futures concurrently (a tiny `join`, to avoid a dependency).
async fn futures_join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}

/// A release writes a `released` lock record and history entry only while the lease holds
/// the lock; afterwards the lease stores nothing, the holder shows the release, and a new
/// acquire works as usual. A release by a lease that lost the lock writes nothing.
pub async fn release_is_fenced_and_recorded<F: Fixture>(f: &F) {
    use crate::LockEvent;
    let s = f.open().await;
    let kp = keypair(21);
    let id = kp.pubkey();
    let lease = s.acquire(&id, owner(&kp, "set-identity")).await.unwrap();
    s.store(&lease, &saved(&kp, &[1, 2])).await.unwrap();
    let rev = s
        .release(&lease, "the tower failed verification")
        .await
        .unwrap();
    assert!(rev > lease.revision());
    let holder = s.lock_holder(&id).await.unwrap().expect("a lock record");
    assert!(!holder.is_held(), "{holder:?}");
    assert_eq!(holder.owner.event, LockEvent::Released);
    assert_eq!(holder.owner.lease_revision, Some(lease.revision()));
    assert_eq!(holder.owner.instance_id, lease.owner().instance_id);
    assert!(Lease::adopt(&holder).is_none(), "a release holds nothing");
    // The released lease is fenced out, and the stored tower is untouched.
    let err = s.store(&lease, &saved(&kp, &[1, 2, 3])).await.unwrap_err();
    assert!(err.is_lock_lost(), "{err}");
    let got = s.load_verified(&id).await.unwrap().unwrap();
    assert_eq!(got, tower_with(&kp, &[1, 2]));
    // Releasing twice, or releasing a lock someone else took, writes nothing.
    assert!(s.release(&lease, "again").await.unwrap_err().is_lock_lost());
    let other = f.open().await;
    let taker = other
        .acquire(&id, owner(&kp, "set-identity"))
        .await
        .unwrap();
    assert!(taker.revision() > rev);
    let late = s.release(&lease, "late").await.unwrap_err();
    assert!(late.is_lock_lost(), "{late}");
    other.store(&taker, &saved(&kp, &[1, 2, 3])).await.unwrap();
    let history = s.history(&id).await.unwrap();
    let events: Vec<_> = history.iter().map(|r| r.owner.event).collect();
    assert_eq!(
        events,
        [
            LockEvent::Acquired,
            LockEvent::Released,
            LockEvent::Acquired
        ],
        "{history:?}"
    );
    assert_eq!(history[1].owner.reason, "the tower failed verification");
    assert_eq!(history[1].revision, rev);
}

/// A `finished` record goes to the history only while the lease holds the lock, and
/// does not move the fence: the lease keeps storing.
pub async fn finished_is_recorded_without_moving_the_fence<F: Fixture>(f: &F) {
    use crate::LockEvent;
    let s = f.open().await;
    let kp = keypair(22);
    let id = kp.pubkey();
    let lease = s.acquire(&id, owner(&kp, "set-identity")).await.unwrap();
    s.record_finished(&lease, "votes as the identity")
        .await
        .unwrap();
    s.store(&lease, &saved(&kp, &[4])).await.unwrap();
    let holder = s.lock_holder(&id).await.unwrap().unwrap();
    assert!(holder.is_held());
    assert_eq!(holder.revision, lease.revision());
    let other = f.open().await;
    let taker = other.acquire(&id, owner(&kp, "reclaim")).await.unwrap();
    let err = s.record_finished(&lease, "late").await.unwrap_err();
    assert!(err.is_lock_lost(), "{err}");
    let history = s.history(&id).await.unwrap();
    let events: Vec<_> = history.iter().map(|r| r.owner.event).collect();
    assert_eq!(
        events,
        [
            LockEvent::Acquired,
            LockEvent::Finished,
            LockEvent::Acquired
        ],
        "{history:?}"
    );
    assert_eq!(history[1].owner.lease_revision, Some(lease.revision()));
    assert_eq!(history[2].revision, taker.revision());
}

/// A process whose acquire answer was lost finds its own record in the lock key and
/// adopts it: the adopted lease stores exactly like the one acquire would have returned.
pub async fn an_own_acquire_is_adopted_from_the_holder<F: Fixture>(f: &F) {
    let s = f.open().await;
    let kp = keypair(23);
    let id = kp.pubkey();
    let sent = owner(&kp, "set-identity");
    let lease = s.acquire(&id, sent.clone()).await.unwrap();
    let holder = s.lock_holder(&id).await.unwrap().unwrap();
    assert_eq!(holder.owner, sent);
    let adopted = Lease::adopt(&holder).expect("an acquire holds the lock");
    assert_eq!(adopted, lease);
    s.store(&adopted, &saved(&kp, &[7])).await.unwrap();
    assert_eq!(
        s.load_verified(&id).await.unwrap(),
        Some(tower_with(&kp, &[7]))
    );
}
