//! Fenced tower storage: one narrow trait, three implementations.
//!
//! * [`MemoryTowerStorage`]: a faithful model of etcd's revisions and compare-and-put,
//!   for unit tests and the cluster simulator.
//! * [`FileTowerStorage`]: one file per identity, written with write/fsync/rename/fsync.
//! * [`EtcdTowerStorage`]: etcd over mutual TLS, every call bounded and retried.
//!
//! The contract (checked by [`conformance`], which all three pass unchanged):
//!
//! * [`TowerStorage::acquire`] takes the lock for an identity and returns a [`Lease`]
//!   whose fencing token is the revision at which the lock was written. Acquiring always
//!   succeeds against a reachable store, even if someone else holds the lock: that is
//!   how a standby takes over from a primary in an unknown state. Every acquire is logged
//!   and appended to the identity's audit history.
//! * [`TowerStorage::store`] writes a tower only if the lock is still exactly ours
//!   (same revision, same owner record), atomically. Otherwise it fails with
//!   [`StorageError::LockLost`] and the stored tower is untouched. A successful store
//!   returns a [`StoreReceipt`] bound to the lease and to the bytes written; only this
//!   crate can make one, and only a receipt confirms a vote's store in the core.
//! * [`TowerStorage::load`] returns the stored bytes parsed; [`TowerStorage::load_verified`]
//!   also checks the signature and identity. A bad tower is an error, never `None`.

mod any;
pub mod conformance;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
mod file;
mod memory;
mod owner;
mod receipt;

use std::future::Future;

use huione_keys::Pubkey;
use huione_tower::{SavedTower, Tower};

pub use any::AnyTowerStorage;
pub use error::{LockLost, StorageError, Unavailable};
#[cfg(feature = "etcd")]
pub use etcd::{CompactionPolicy, EtcdConfig, EtcdStatus, EtcdTowerStorage};
pub use file::FileTowerStorage;
pub use memory::{MemKv, MemoryTowerStorage};
pub use owner::{new_instance_id, LockEvent, LockOwner, LockRecord};
pub use receipt::{ReceiptMismatch, StoreReceipt};

/// etcd-style revision: a cluster-wide counter that increases with every write.
pub type Revision = i64;

/// Proof that we acquired the lock for `identity` at `revision` (the fencing token).
/// Only [`TowerStorage::acquire`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    identity: Pubkey,
    owner: LockOwner,
    revision: Revision,
    /// The exact bytes of the owner record in the lock key, compared on every store.
    owner_bytes: Vec<u8>,
}

impl Lease {
    pub(crate) fn new(identity: Pubkey, owner: LockOwner, revision: Revision) -> Self {
        let owner_bytes = owner.to_bytes();
        Lease {
            identity,
            owner,
            revision,
            owner_bytes,
        }
    }
    pub fn identity(&self) -> Pubkey {
        self.identity
    }
    pub fn owner(&self) -> &LockOwner {
        &self.owner
    }
    /// The fencing token.
    pub fn revision(&self) -> Revision {
        self.revision
    }
    pub(crate) fn owner_bytes(&self) -> &[u8] {
        &self.owner_bytes
    }

    /// The lease of a lock record read back from storage ([`TowerStorage::lock_holder`]),
    /// for a process that finds its own acquire there after the acquire's answer was lost
    /// (a timeout): the record names its instance id and the acquire it sent. `None` for
    /// a record that does not hold the lock (a release). Nothing is trusted by making one:
    /// every store under it is still compared with the lock key inside storage.
    pub fn adopt(record: &LockRecord) -> Option<Lease> {
        record
            .is_held()
            .then(|| Lease::new(record.owner.identity, record.owner.clone(), record.revision))
    }
}

/// Where towers live. Implementations must be safe to share between tasks.
pub trait TowerStorage: Send + Sync {
    /// A short description for logs: `etcd https://127.0.0.1:2379 (prefix /huione)`.
    fn describe(&self) -> String;

    /// Takes the lock for `identity` (unconditionally) and returns the lease.
    fn acquire(
        &self,
        identity: &Pubkey,
        owner: LockOwner,
    ) -> impl Future<Output = Result<Lease, StorageError>> + Send;

    /// Stores `tower` if `lease` still holds the lock. Returns the receipt of the write
    /// (its revision, the fence and the digest of the bytes written): the only thing
    /// that confirms a vote's store in the core.
    fn store(
        &self,
        lease: &Lease,
        tower: &SavedTower,
    ) -> impl Future<Output = Result<StoreReceipt, StorageError>> + Send;

    /// The stored tower for `identity`, parsed but not verified.
    fn load(
        &self,
        identity: &Pubkey,
    ) -> impl Future<Output = Result<Option<SavedTower>, StorageError>> + Send;

    /// Gives the lock up, fenced like a store: only if `lease` still holds the lock, one
    /// atomic write replaces the lock record with a `released` one (reason = `reason`) and
    /// appends it to the history. From then on no store under `lease` succeeds, and
    /// [`TowerStorage::lock_holder`] shows the release. `Err(LockLost)` if the lock is no
    /// longer ours: someone else took it (or we released it already), nothing written.
    /// Used by a takeover that acquired the lock but cannot finish.
    fn release(
        &self,
        lease: &Lease,
        reason: &str,
    ) -> impl Future<Output = Result<Revision, StorageError>> + Send;

    /// Appends a `finished` record to the history, fenced like a store (only while
    /// `lease` holds the lock). The lock record, and so the fencing token, is unchanged.
    fn record_finished(
        &self,
        lease: &Lease,
        reason: &str,
    ) -> impl Future<Output = Result<Revision, StorageError>> + Send;

    /// The lock record for `identity` and its revision: the holder, or a release
    /// ([`LockRecord::is_held`] is false), or `None` if it was never acquired.
    fn lock_holder(
        &self,
        identity: &Pubkey,
    ) -> impl Future<Output = Result<Option<LockRecord>, StorageError>> + Send;

    /// Every acquire, finish and release of `identity`'s lock, oldest first.
    fn history(
        &self,
        identity: &Pubkey,
    ) -> impl Future<Output = Result<Vec<LockRecord>, StorageError>> + Send;

    /// The stored tower for `identity`, verified (signature and identity).
    fn load_verified(
        &self,
        identity: &Pubkey,
    ) -> impl Future<Output = Result<Option<Tower>, StorageError>> + Send {
        async move {
            match self.load(identity).await? {
                None => Ok(None),
                Some(saved) => Ok(Some(saved.verify(identity).map_err(StorageError::Tower)?)),
            }
        }
    }
}

/// Checks that a tower handed to `store` belongs to the lease's identity.
pub(crate) fn check_tower_identity(lease: &Lease, tower: &SavedTower) -> Result<(), StorageError> {
    if tower.node_pubkey() != lease.identity {
        return Err(StorageError::Tower(
            huione_tower::TowerError::WrongIdentity {
                expected: lease.identity,
                found: tower.node_pubkey(),
            },
        ));
    }
    Ok(())
}

/// Key names shared by the etcd store and its in-memory model.
pub(crate) mod keys {
    use huione_keys::Pubkey;

    pub fn tower(prefix: &str, id: &Pubkey) -> String {
        format!("{prefix}/tower/{id}")
    }
    pub fn lock(prefix: &str, id: &Pubkey) -> String {
        format!("{prefix}/lock/{id}")
    }
    /// Audit records: one key per acquire, written in the same transaction as the lock,
    /// so its revision is the lease's fencing token.
    pub fn audit_dir(prefix: &str, id: &Pubkey) -> String {
        format!("{prefix}/audit/{id}/")
    }
    /// `<instance id>-<n>`: one process (one instance id) may acquire an identity more
    /// than once, and each acquire (finish, release) keeps its own record.
    pub fn audit(prefix: &str, id: &Pubkey, owner: &crate::LockOwner) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static ACQUIRES: AtomicU64 = AtomicU64::new(0);
        let n = ACQUIRES.fetch_add(1, Ordering::Relaxed);
        format!("{}{}-{n}", audit_dir(prefix, id), owner.instance_id)
    }
}
