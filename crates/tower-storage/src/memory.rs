//! In-memory tower storage built on [`MemKv`], a model of etcd's key space.
//!
//! [`MemKv`] keeps etcd's semantics that the fencing depends on: one cluster revision
//! that every write transaction increments once; per key `create_revision`,
//! `mod_revision` and `version`; a missing key compares as mod_revision 0; a transaction
//! applies all its puts or none. Clones of [`MemoryTowerStorage`] share one key space,
//! like two clients of one etcd cluster. The simulator can make it unavailable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use huione_keys::Pubkey;
use huione_tower::SavedTower;

use crate::{
    check_tower_identity, keys, Lease, LockEvent, LockLost, LockOwner, LockRecord, Revision,
    StorageError, StoreReceipt, TowerStorage, Unavailable,
};

/// One key's value and metadata, as etcd reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
}

/// A transaction guard.
#[derive(Clone, Debug)]
pub enum Compare {
    /// The key's mod_revision equals this (0 = the key does not exist).
    ModRevision(String, Revision),
    /// The key exists and its value equals this.
    Value(String, Vec<u8>),
}

/// A model of etcd's multi-version key space (latest versions only).
#[derive(Clone, Debug, Default)]
pub struct MemKv {
    revision: Revision,
    data: BTreeMap<String, KeyValue>,
}

impl MemKv {
    pub fn new() -> Self {
        // etcd starts at revision 1 with an empty key space.
        MemKv {
            revision: 1,
            data: BTreeMap::new(),
        }
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn get(&self, key: &str) -> Option<&KeyValue> {
        self.data.get(key)
    }

    pub fn range_prefix(&self, prefix: &str) -> Vec<(String, KeyValue)> {
        self.data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// If every compare holds, applies all `puts` at one new revision. Returns whether
    /// the compares held and the header revision after the transaction.
    pub fn txn(&mut self, compares: &[Compare], puts: Vec<(String, Vec<u8>)>) -> (bool, Revision) {
        let ok = compares.iter().all(|c| match c {
            Compare::ModRevision(k, r) => self.data.get(k).map_or(0, |kv| kv.mod_revision) == *r,
            Compare::Value(k, v) => self.data.get(k).is_some_and(|kv| kv.value == *v),
        });
        if !ok || puts.is_empty() {
            return (ok, self.revision);
        }
        self.revision += 1;
        let rev = self.revision;
        for (k, value) in puts {
            let entry = self.data.entry(k).or_insert(KeyValue {
                value: Vec::new(),
                create_revision: rev,
                mod_revision: rev,
                version: 0,
            });
            entry.value = value;
            entry.mod_revision = rev;
            entry.version += 1;
        }
        (true, rev)
    }

    /// A plain put (its own transaction).
    pub fn put(&mut self, key: &str, value: Vec<u8>) -> Revision {
        self.txn(&[], vec![(key.to_string(), value)]).1
    }

    pub fn delete(&mut self, key: &str) -> bool {
        if self.data.remove(key).is_some() {
            self.revision += 1;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct State {
    kv: MemKv,
    available: bool,
    /// Each identity's (lock key, tower key): a key names the identity in base58, which
    /// is not worth recomputing for every store.
    key_names: HashMap<Pubkey, (String, String)>,
    /// Each identity's lock record as last decoded, with the lock key's mod_revision it
    /// was decoded at (a revision names one value: every write takes a new one).
    holders: HashMap<Pubkey, LockRecord>,
}

/// Identities whose key names are remembered (more are computed each time).
const MAX_KEY_NAMES: usize = 4096;

/// Tower storage in memory, with etcd's fencing semantics. Clones share state.
#[derive(Clone, Debug)]
pub struct MemoryTowerStorage {
    state: Arc<Mutex<State>>,
    prefix: String,
}

impl Default for MemoryTowerStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTowerStorage {
    pub fn new() -> Self {
        MemoryTowerStorage {
            state: Arc::new(Mutex::new(State {
                kv: MemKv::new(),
                available: true,
                key_names: HashMap::new(),
                holders: HashMap::new(),
            })),
            prefix: "/huione".into(),
        }
    }

    /// Simulates an outage: while unavailable every call fails with `Unavailable`.
    pub fn set_available(&self, available: bool) {
        self.lock().available = available;
    }

    /// Direct access to the key space, for tests that tamper with stored bytes.
    pub fn with_kv<R>(&self, f: impl FnOnce(&mut MemKv) -> R) -> R {
        f(&mut self.lock().kv)
    }

    pub fn tower_key(&self, identity: &Pubkey) -> String {
        keys::tower(&self.prefix, identity)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the model half-updated (txn is
        // all-or-nothing before it mutates), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn available(&self) -> Result<std::sync::MutexGuard<'_, State>, StorageError> {
        let s = self.lock();
        if !s.available {
            return Err(Unavailable {
                target: "memory".into(),
                detail: "simulated outage".into(),
            }
            .into());
        }
        Ok(s)
    }

    pub fn acquire_now(&self, identity: &Pubkey, owner: LockOwner) -> Result<Lease, StorageError> {
        let mut s = self.available()?;
        let bytes = owner.to_bytes();
        let puts = vec![
            (keys::lock(&self.prefix, identity), bytes.clone()),
            (keys::audit(&self.prefix, identity, &owner), bytes),
        ];
        let (_, rev) = s.kv.txn(&[], puts);
        Ok(Lease::new(*identity, owner, rev))
    }

    /// The lock key's mod_revision (0 if absent), as etcd's acquire guards on it.
    pub fn lock_revision_now(&self, identity: &Pubkey) -> Result<Revision, StorageError> {
        let mut s = self.available()?;
        let (lock_key, _) = self.key_names(&mut s, identity);
        Ok(s.kv.get(&lock_key).map_or(0, |kv| kv.mod_revision))
    }

    /// An acquire guarded as etcd's attempts are: it applies only if the lock key's
    /// mod_revision is still `seen` ([`Self::lock_revision_now`] when it was sent). The
    /// simulator uses it for an acquire that reaches storage late: it cannot apply on top
    /// of a newer acquire. `Ok(None)`: the guard failed, nothing written.
    pub fn acquire_if_unchanged_now(
        &self,
        identity: &Pubkey,
        owner: LockOwner,
        seen: Revision,
    ) -> Result<Option<Lease>, StorageError> {
        let mut s = self.available()?;
        let (lock_key, _) = self.key_names(&mut s, identity);
        let bytes = owner.to_bytes();
        let puts = vec![
            (lock_key.clone(), bytes.clone()),
            (keys::audit(&self.prefix, identity, &owner), bytes),
        ];
        let (ok, rev) = s.kv.txn(&[Compare::ModRevision(lock_key, seen)], puts);
        Ok(ok.then(|| Lease::new(*identity, owner, rev)))
    }

    /// See [`TowerStorage::release`].
    pub fn release_now(&self, lease: &Lease, reason: &str) -> Result<Revision, StorageError> {
        let record = LockOwner::ending(lease, LockEvent::Released, reason);
        self.fenced_record(lease, record, true)
    }

    /// See [`TowerStorage::record_finished`].
    pub fn record_finished_now(
        &self,
        lease: &Lease,
        reason: &str,
    ) -> Result<Revision, StorageError> {
        let record = LockOwner::ending(lease, LockEvent::Finished, reason);
        self.fenced_record(lease, record, false)
    }

    /// Appends `record` to the history (and writes it into the lock key if `to_lock`),
    /// only while `lease` holds the lock.
    fn fenced_record(
        &self,
        lease: &Lease,
        record: LockOwner,
        to_lock: bool,
    ) -> Result<Revision, StorageError> {
        let mut s = self.available()?;
        let identity = lease.identity();
        let (lock_key, _) = self.key_names(&mut s, &identity);
        let compares = [
            Compare::ModRevision(lock_key.clone(), lease.revision()),
            Compare::Value(lock_key.clone(), lease.owner_bytes().to_vec()),
        ];
        let bytes = record.to_bytes();
        let mut puts = vec![(keys::audit(&self.prefix, &identity, &record), bytes.clone())];
        if to_lock {
            puts.push((lock_key.clone(), bytes));
        }
        let (ok, rev) = s.kv.txn(&compares, puts);
        if ok {
            return Ok(rev);
        }
        let holder = s.kv.get(&lock_key).and_then(record_of);
        Err(LockLost {
            identity,
            ours: lease.revision(),
            holder,
        }
        .into())
    }

    pub fn store_now(
        &self,
        lease: &Lease,
        tower: &SavedTower,
    ) -> Result<StoreReceipt, StorageError> {
        check_tower_identity(lease, tower)?;
        let mut s = self.available()?;
        let (lock_key, tower_key) = self.key_names(&mut s, &lease.identity());
        let compares = [
            Compare::ModRevision(lock_key.clone(), lease.revision()),
            Compare::Value(lock_key.clone(), lease.owner_bytes().to_vec()),
        ];
        let bytes = tower.to_bytes();
        let (ok, rev) = s.kv.txn(&compares, vec![(tower_key, bytes.clone())]);
        if ok {
            return Ok(StoreReceipt::new(lease, &bytes, rev));
        }
        let holder = s.kv.get(&lock_key).and_then(record_of);
        Err(LockLost {
            identity: lease.identity(),
            ours: lease.revision(),
            holder,
        }
        .into())
    }

    /// `identity`'s (lock key, tower key).
    fn key_names(&self, s: &mut State, identity: &Pubkey) -> (String, String) {
        if let Some(names) = s.key_names.get(identity) {
            return names.clone();
        }
        let names = (
            keys::lock(&self.prefix, identity),
            keys::tower(&self.prefix, identity),
        );
        if s.key_names.len() < MAX_KEY_NAMES {
            s.key_names.insert(*identity, names.clone());
        }
        names
    }

    pub fn load_now(&self, identity: &Pubkey) -> Result<Option<SavedTower>, StorageError> {
        let s = self.available()?;
        match s.kv.get(&keys::tower(&self.prefix, identity)) {
            None => Ok(None),
            Some(kv) => Ok(Some(SavedTower::from_bytes(&kv.value)?)),
        }
    }

    pub fn lock_holder_now(&self, identity: &Pubkey) -> Result<Option<LockRecord>, StorageError> {
        let mut s = self.available()?;
        let (lock_key, _) = self.key_names(&mut s, identity);
        let Some(kv) = s.kv.get(&lock_key) else {
            return Ok(None);
        };
        if let Some(r) = s
            .holders
            .get(identity)
            .filter(|r| r.revision == kv.mod_revision)
        {
            return Ok(Some(r.clone()));
        }
        let record = record_of(kv);
        if let Some(r) = &record {
            if s.holders.len() < MAX_KEY_NAMES || s.holders.contains_key(identity) {
                s.holders.insert(*identity, r.clone());
            }
        }
        Ok(record)
    }

    pub fn history_now(&self, identity: &Pubkey) -> Result<Vec<LockRecord>, StorageError> {
        let s = self.available()?;
        let mut records: Vec<LockRecord> =
            s.kv.range_prefix(&keys::audit_dir(&self.prefix, identity))
                .iter()
                .filter_map(|(_, kv)| record_of(kv))
                .collect();
        records.sort_by_key(|r| r.revision);
        Ok(records)
    }
}

fn record_of(kv: &KeyValue) -> Option<LockRecord> {
    Some(LockRecord {
        owner: LockOwner::from_bytes(&kv.value)?,
        revision: kv.mod_revision,
    })
}

impl TowerStorage for MemoryTowerStorage {
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn acquire(&self, identity: &Pubkey, owner: LockOwner) -> Result<Lease, StorageError> {
        self.acquire_now(identity, owner)
    }
    async fn store(&self, lease: &Lease, tower: &SavedTower) -> Result<StoreReceipt, StorageError> {
        self.store_now(lease, tower)
    }
    async fn load(&self, identity: &Pubkey) -> Result<Option<SavedTower>, StorageError> {
        self.load_now(identity)
    }
    async fn release(&self, lease: &Lease, reason: &str) -> Result<Revision, StorageError> {
        self.release_now(lease, reason)
    }
    async fn record_finished(&self, lease: &Lease, reason: &str) -> Result<Revision, StorageError> {
        self.record_finished_now(lease, reason)
    }
    async fn lock_holder(&self, identity: &Pubkey) -> Result<Option<LockRecord>, StorageError> {
        self.lock_holder_now(identity)
    }
    async fn history(&self, identity: &Pubkey) -> Result<Vec<LockRecord>, StorageError> {
        self.history_now(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_models_etcd_revisions() {
        let mut kv = MemKv::new();
        assert_eq!(kv.revision(), 1);
        let r1 = kv.put("a", b"1".to_vec());
        assert_eq!(r1, 2);
        let r2 = kv
            .txn(
                &[],
                vec![("a".into(), b"2".to_vec()), ("b".into(), b"x".to_vec())],
            )
            .1;
        assert_eq!(r2, 3);
        let a = kv.get("a").unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
        assert_eq!(kv.get("b").unwrap().create_revision, 3);
        // failed compare: nothing written, revision unchanged
        let (ok, rev) = kv.txn(
            &[Compare::ModRevision("a".into(), 2)],
            vec![("a".into(), b"3".to_vec())],
        );
        assert!(!ok);
        assert_eq!(rev, 3);
        assert_eq!(kv.get("a").unwrap().value, b"2");
        // missing key compares as mod_revision 0
        assert!(kv.txn(&[Compare::ModRevision("zz".into(), 0)], vec![]).0);
        assert!(!kv.txn(&[Compare::Value("zz".into(), vec![])], vec![]).0);
        assert_eq!(kv.range_prefix("a").len(), 1);
        assert!(kv.delete("a"));
        assert_eq!(kv.revision(), 4);
    }

    #[test]
    fn outage_fails_every_call_as_transient() {
        let s = MemoryTowerStorage::new();
        let id = Pubkey::from_seed_byte(3);
        s.set_available(false);
        let err = s
            .acquire_now(&id, LockOwner::for_this_process(id, "test"))
            .unwrap_err();
        assert!(err.is_transient() && !err.is_lock_lost());
        s.set_available(true);
        assert!(s
            .acquire_now(&id, LockOwner::for_this_process(id, "test"))
            .is_ok());
    }
}
