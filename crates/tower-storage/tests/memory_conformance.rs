//! The conformance suite against the in-memory (etcd model) storage.

use huione_keys::Pubkey;
use huione_tower_storage::conformance::Fixture;
use huione_tower_storage::MemoryTowerStorage;

struct Memory(MemoryTowerStorage);

impl Fixture for Memory {
    type Storage = MemoryTowerStorage;
    async fn open(&self) -> MemoryTowerStorage {
        self.0.clone()
    }
    async fn put_raw_tower(&self, identity: &Pubkey, bytes: &[u8]) {
        let key = self.0.tower_key(identity);
        self.0.with_kv(|kv| kv.put(&key, bytes.to_vec()));
    }
}

huione_tower_storage::conformance_tests!(Memory(MemoryTowerStorage::new()));
