//! Storage errors, split by what the caller must do.
//!
//! * [`StorageError::LockLost`]: fatal for a voter. Someone else acquired the lock; stop
//!   voting now and exit.
//! * [`StorageError::Unavailable`]: transient. Withhold the vote and retry.
//! * [`StorageError::Tower`]: the stored tower is bad (tampered, wrong identity, unknown
//!   version). Never replaced silently; an operator must look.
//! * [`StorageError::NoSpace`]: etcd's NOSPACE alarm is raised and it refuses every write.
//!   Withhold the vote and retry, but an operator must free space: the message says how.
//! * [`StorageError::Config`]: the storage cannot work as configured (certificates,
//!   paths). Fix the configuration.

use std::path::PathBuf;

use huione_keys::Pubkey;
use huione_tower::TowerError;

use crate::{LockRecord, Revision};

/// Another instance took the lock: our writes are fenced off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "lost the tower lock for {identity}: we acquired it at revision {ours}, {}",
    match holder {
        Some(h) => format!(
            "now held by instance {} on {} (pid {}) since revision {}",
            h.owner.instance_id, h.owner.host, h.owner.pid, h.revision
        ),
        None => "and the lock key is gone".to_string(),
    }
)]
pub struct LockLost {
    pub identity: Pubkey,
    pub ours: Revision,
    pub holder: Option<LockRecord>,
}

/// The store could not be reached or did not answer in time. Retrying may work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tower storage {target} is unavailable: {detail}")]
pub struct Unavailable {
    /// Endpoint(s) or path.
    pub target: String,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Boxed: the holder record is large and errors travel on the hot path.
    #[error(transparent)]
    LockLost(Box<LockLost>),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error("{0}")]
    Tower(#[from] TowerError),
    /// etcd's database reached its quota (`--quota-backend-bytes`) and the NOSPACE alarm
    /// makes it refuse every write until an operator compacts, defragments and disarms.
    #[error(
        "tower storage {target} is out of space: {detail}. etcd raised its NOSPACE alarm (its \
         database reached --quota-backend-bytes) and refuses every write, so every vote is \
         withheld. Fix: free space with `etcdctl compact <current revision>` (the revision is \
         in `etcdctl endpoint status -w json`), then `etcdctl defrag` against each member, \
         then `etcdctl alarm disarm`; raise --quota-backend-bytes if the data is really that \
         large (see README, Operating for months)"
    )]
    NoSpace { target: String, detail: String },
    #[error("tower storage is misconfigured: {0}")]
    Config(String),
    #[error("tower storage I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StorageError {
    /// True when the lock is gone: the caller must stop voting and exit.
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, StorageError::LockLost(_))
    }
    /// True when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Unavailable(_) => true,
            // Writes work again once an operator has freed space and disarmed the alarm.
            StorageError::NoSpace { .. } => true,
            // Out of space or an interrupted write: the old tower is intact; retry.
            StorageError::Io { .. } => true,
            _ => false,
        }
    }
}

impl From<LockLost> for StorageError {
    fn from(e: LockLost) -> Self {
        StorageError::LockLost(Box::new(e))
    }
}
