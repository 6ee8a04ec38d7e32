//! Tower storage in a directory, for a single machine.
//!
//! Files per identity (`<id>` is the base58 pubkey):
//!
//! * `tower-1-<id>.bin`: the saved tower (any format version this build reads).
//! * `tower-lock-<id>.json`: the lock record (owner + revision, the fencing token).
//! * `tower-audit-<id>.jsonl`: one line per acquire.
//! * `.tower-<id>.flock`: an advisory `flock` that serialises acquire and store between
//!   processes on this machine.
//!
//! Every file is replaced by writing a temporary file, fsyncing it, renaming it over the
//! old one and fsyncing the directory, so a crash at any point leaves the old or the new
//! contents, never a torn file. A failed write (a full disk, say) leaves the old tower.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use huione_keys::Pubkey;
use huione_tower::SavedTower;

/// Part of the tower file's name; see [`FileTowerStorage::tower_path`].
const TOWER_FILE_GENERATION: u32 = 1;

use crate::{
    check_tower_identity, Lease, LockEvent, LockLost, LockOwner, LockRecord, Revision,
    StorageError, StoreReceipt, TowerStorage,
};

/// Tower storage in a local directory (`--tower-storage file --tower DIR`).
#[derive(Clone, Debug)]
pub struct FileTowerStorage {
    dir: PathBuf,
}

impl FileTowerStorage {
    /// Uses `dir`, creating it if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| StorageError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(FileTowerStorage { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/tower-1-<pubkey>.bin`. The `1` is the file name's generation, not the
    /// saved-tower format: the format is inside the file and readers accept every version
    /// they know. Tying the name to the format would make an upgraded node miss the tower
    /// an older one stored and start from an empty tower (a double vote).
    pub fn tower_path(&self, id: &Pubkey) -> PathBuf {
        self.dir
            .join(format!("tower-{TOWER_FILE_GENERATION}-{id}.bin"))
    }
    fn lock_path(&self, id: &Pubkey) -> PathBuf {
        self.dir.join(format!("tower-lock-{id}.json"))
    }
    fn audit_path(&self, id: &Pubkey) -> PathBuf {
        self.dir.join(format!("tower-audit-{id}.jsonl"))
    }
    fn flock_path(&self, id: &Pubkey) -> PathBuf {
        self.dir.join(format!(".tower-{id}.flock"))
    }

    /// Holds the per-identity advisory lock until the returned file is dropped.
    fn exclusive(&self, id: &Pubkey) -> Result<File, StorageError> {
        let path = self.flock_path(id);
        let io = |source| StorageError::Io {
            path: path.clone(),
            source,
        };
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        f.lock().map_err(io)?;
        Ok(f)
    }

    fn read_lock(&self, id: &Pubkey) -> Result<Option<LockRecord>, StorageError> {
        let path = self.lock_path(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                StorageError::Config(format!(
                    "the lock file {} is corrupt ({e}); move it aside after making sure no \
                     validator is running with this identity",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Io { path, source }),
        }
    }

    pub fn acquire_now(&self, id: &Pubkey, owner: LockOwner) -> Result<Lease, StorageError> {
        let _guard = self.exclusive(id)?;
        let previous = self.read_lock(id)?.map_or(0, |r| r.revision);
        let history_len = self.history_now(id)?.last().map_or(0, |r| r.revision);
        let revision = previous.max(history_len) + 1;
        let record = LockRecord {
            owner: owner.clone(),
            revision,
        };
        let line = serde_json::to_vec(&record).expect("record serializes");
        append_synced(&self.audit_path(id), &line)?;
        replace_file(&self.lock_path(id), &line)?;
        tracing::info!(identity = %id, instance = %owner.instance_id, revision, reason = %owner.reason,
            dir = %self.dir.display(), "acquired the tower lock");
        Ok(Lease::new(*id, owner, revision))
    }

    pub fn store_now(
        &self,
        lease: &Lease,
        tower: &SavedTower,
    ) -> Result<StoreReceipt, StorageError> {
        check_tower_identity(lease, tower)?;
        let id = lease.identity();
        let _guard = self.exclusive(&id)?;
        let current = self.read_lock(&id)?;
        let ours = current.as_ref().is_some_and(|r| {
            r.is_held() && r.revision == lease.revision() && r.owner == *lease.owner()
        });
        if !ours {
            return Err(LockLost {
                identity: id,
                ours: lease.revision(),
                holder: current,
            }
            .into());
        }
        let bytes = tower.to_bytes();
        replace_file(&self.tower_path(&id), &bytes)?;
        Ok(StoreReceipt::new(lease, &bytes, lease.revision()))
    }

    /// See [`TowerStorage::release`]: the lock file then holds the `released` record.
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

    /// Under the flock, while `lease` holds the lock: appends `owner` to the history with
    /// the next revision, and replaces the lock file with it if `to_lock`.
    fn fenced_record(
        &self,
        lease: &Lease,
        owner: LockOwner,
        to_lock: bool,
    ) -> Result<Revision, StorageError> {
        let id = lease.identity();
        let _guard = self.exclusive(&id)?;
        let current = self.read_lock(&id)?;
        let ours = current.as_ref().is_some_and(|r| {
            r.is_held() && r.revision == lease.revision() && r.owner == *lease.owner()
        });
        if !ours {
            return Err(LockLost {
                identity: id,
                ours: lease.revision(),
                holder: current,
            }
            .into());
        }
        let last = self.history_now(&id)?.last().map_or(0, |r| r.revision);
        let revision = lease.revision().max(last) + 1;
        let line = serde_json::to_vec(&LockRecord { owner, revision }).expect("record serializes");
        append_synced(&self.audit_path(&id), &line)?;
        if to_lock {
            replace_file(&self.lock_path(&id), &line)?;
        }
        Ok(revision)
    }

    pub fn load_now(&self, id: &Pubkey) -> Result<Option<SavedTower>, StorageError> {
        let path = self.tower_path(id);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(SavedTower::from_bytes(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Io { path, source }),
        }
    }

    pub fn history_now(&self, id: &Pubkey) -> Result<Vec<LockRecord>, StorageError> {
        let path = self.audit_path(id);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StorageError::Io { path, source }),
        };
        // A crash mid-append can leave a partial last line; skip lines that do not parse.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<LockRecord>(l).ok())
            .collect())
    }
}

/// Replaces `path` crash-safely (`huione_os::fs::write_atomic`: temp file, fsync, rename,
/// fsync of the directory). On error `path` is untouched.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    huione_os::fs::write_atomic(path, bytes).map_err(|source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn append_synced(path: &Path, line: &[u8]) -> Result<(), StorageError> {
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        let mut buf = line.to_vec();
        buf.push(b'\n');
        f.write_all(&buf)?;
        f.sync_all()
    })();
    result.map_err(|source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl TowerStorage for FileTowerStorage {
    fn describe(&self) -> String {
        format!("file {}", self.dir.display())
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
        self.read_lock(identity)
    }
    async fn history(&self, identity: &Pubkey) -> Result<Vec<LockRecord>, StorageError> {
        self.history_now(identity)
    }
}
