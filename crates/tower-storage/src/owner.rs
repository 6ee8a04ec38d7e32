//! The owner record written into the lock key, and lock/audit records read back.

use huione_keys::Pubkey;
use serde::{Deserialize, Serialize};

use crate::Revision;

/// Who holds (or held) a tower lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// The identity whose tower is locked.
    pub identity: Pubkey,
    /// The holding process's instance id: the one it announces in gossip and writes into
    /// its `audit.jsonl`. Random per process; two processes never share one.
    pub instance_id: String,
    pub host: String,
    pub pid: u32,
    /// Unix time in milliseconds when the lock was taken.
    pub acquired_at_ms: u64,
    /// Why: "startup", "set-identity", "reclaim", "test", ... For a `finished` or
    /// `released` record: how the takeover ended and why.
    pub reason: String,
    /// What the record says. The lock key holds an `acquired` record while the lock is
    /// held, and a `released` one after a fenced [`crate::TowerStorage::release`]; the
    /// history also holds `finished` records ([`crate::TowerStorage::record_finished`]).
    /// Absent in records written before releases existed (they are all acquires).
    #[serde(default, skip_serializing_if = "LockEvent::is_acquired")]
    pub event: LockEvent,
    /// For `finished` and `released`: the fencing token of the acquire the record ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_revision: Option<Revision>,
}

/// What a lock or history record says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockEvent {
    /// The lock was taken (the only kind of record that holds the lock).
    #[default]
    Acquired,
    /// The takeover under that acquire finished: the holder switched and votes.
    Finished,
    /// The holder gave the lock up (a takeover that could not finish): nobody holds it.
    Released,
}

impl LockEvent {
    pub fn is_acquired(&self) -> bool {
        matches!(self, LockEvent::Acquired)
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            LockEvent::Acquired => "acquired",
            LockEvent::Finished => "finished",
            LockEvent::Released => "released",
        }
    }
}

impl LockOwner {
    /// A record for this process under `instance_id` (a validator passes the one id it
    /// uses everywhere, from [`new_instance_id`] at start).
    pub fn new(identity: Pubkey, instance_id: &str, reason: &str) -> Self {
        assert!(
            !instance_id.is_empty(),
            "an owner record needs an instance id"
        );
        LockOwner {
            identity,
            instance_id: instance_id.to_string(),
            host: hostname(),
            pid: std::process::id(),
            acquired_at_ms: huione_os::clock::now_ms(),
            reason: reason.to_string(),
            event: LockEvent::Acquired,
            lease_revision: None,
        }
    }

    /// The record that ends the takeover under `lease` (`finished` or `released`, with
    /// why): the lease's owner, the event, the reason, and the lease's fencing token.
    pub fn ending(lease: &crate::Lease, event: LockEvent, reason: &str) -> Self {
        LockOwner {
            event,
            reason: reason.to_string(),
            lease_revision: Some(lease.revision()),
            acquired_at_ms: huione_os::clock::now_ms(),
            ..lease.owner().clone()
        }
    }

    /// A record with a fresh random instance id, for tools and tests that act as an
    /// instance of their own (an operator's `acquire`, a conformance fixture).
    pub fn for_this_process(identity: Pubkey, reason: &str) -> Self {
        Self::new(identity, &new_instance_id(), reason)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("owner record serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A lock or audit record: the owner and the revision at which the lock was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub owner: LockOwner,
    pub revision: Revision,
}

impl LockRecord {
    /// Whether this record holds the lock (an acquire, not a release).
    pub fn is_held(&self) -> bool {
        self.owner.event.is_acquired()
    }
}

/// A fresh random instance id (32 hex digits), taken once per process at start.
pub fn new_instance_id() -> String {
    let mut id = [0u8; 16];
    // A failing OS RNG is vanishingly rare; fall back to time+pid, still unique enough
    // because uniqueness is also enforced by the revision compare.
    if getrandom::getrandom(&mut id).is_err() {
        let t = huione_os::clock::now_ms().to_le_bytes();
        id[..8].copy_from_slice(&t);
        id[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}
