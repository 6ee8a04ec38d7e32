//! [`AnyTowerStorage`]: the storage chosen on the command line, as one concrete type.

use huione_keys::Pubkey;
use huione_tower::SavedTower;

#[cfg(feature = "etcd")]
use crate::EtcdTowerStorage;
use crate::{
    FileTowerStorage, Lease, LockOwner, LockRecord, MemoryTowerStorage, Revision, StorageError,
    StoreReceipt, TowerStorage,
};

/// One of the three implementations, picked at run time (`--tower-storage`).
#[derive(Clone)]
pub enum AnyTowerStorage {
    Memory(MemoryTowerStorage),
    File(FileTowerStorage),
    #[cfg(feature = "etcd")]
    Etcd(EtcdTowerStorage),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyTowerStorage::Memory($s) => $e,
            AnyTowerStorage::File($s) => $e,
            #[cfg(feature = "etcd")]
            AnyTowerStorage::Etcd($s) => $e,
        }
    };
}

impl TowerStorage for AnyTowerStorage {
    fn describe(&self) -> String {
        delegate!(self, s => s.describe())
    }
    async fn acquire(&self, identity: &Pubkey, owner: LockOwner) -> Result<Lease, StorageError> {
        delegate!(self, s => s.acquire(identity, owner).await)
    }
    async fn store(&self, lease: &Lease, tower: &SavedTower) -> Result<StoreReceipt, StorageError> {
        delegate!(self, s => s.store(lease, tower).await)
    }
    async fn load(&self, identity: &Pubkey) -> Result<Option<SavedTower>, StorageError> {
        delegate!(self, s => s.load(identity).await)
    }
    async fn release(&self, lease: &Lease, reason: &str) -> Result<Revision, StorageError> {
        delegate!(self, s => s.release(lease, reason).await)
    }
    async fn record_finished(&self, lease: &Lease, reason: &str) -> Result<Revision, StorageError> {
        delegate!(self, s => s.record_finished(lease, reason).await)
    }
    async fn lock_holder(&self, identity: &Pubkey) -> Result<Option<LockRecord>, StorageError> {
        delegate!(self, s => s.lock_holder(identity).await)
    }
    async fn history(&self, identity: &Pubkey) -> Result<Vec<LockRecord>, StorageError> {
        delegate!(self, s => s.history(identity).await)
    }
}
