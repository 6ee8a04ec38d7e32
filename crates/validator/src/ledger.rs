//! The ledger directory: blocks on disk (for restart), snapshots of the rooted state,
//! and the audit log of every vote this process sent and every block it produced.
//!
//! Layout: `<ledger>/genesis.json`, `<ledger>/blocks/` (segment files, see
//! [`blockstore`]), `<ledger>/snapshots/` (see [`snapshots`]), `<ledger>/audit.jsonl` and
//! its rotated segments (see [`audit_log`]), `<ledger>/admin.rpc`.
//!
//! A restart loads the newest snapshot that verifies and replays only the stored blocks
//! after it (plus the rooted blocks the core keeps for repair), so its cost does not grow
//! with the chain's age. Blocks below the retention bound (`--limit-ledger-slots`, never
//! above the oldest snapshot kept) are deleted a segment at a time.

pub mod audit_log;
pub mod blockstore;
pub mod generate;
pub mod snapshots;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use huione_core::audit::{AuditRecord, BlockRecord, VoteRecord};
use huione_core::{Bank, Block, Genesis, Hash, Ledger, SignedVote, Slot, MAX_ROOTED_BLOCKS};

pub use audit_log::AuditLog;
pub use blockstore::{BlockStore, Damage};
pub use snapshots::{Rejected, RootSnapshot, Snapshots};

/// Sizes and bounds of the ledger directory.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// Blocks kept below the newest root (deleted a segment at a time).
    pub limit_ledger_slots: u64,
    /// A snapshot is written each time the root has advanced this many slots.
    pub snapshot_interval_slots: u64,
    /// Snapshots kept (the newest ones).
    pub snapshots_to_keep: usize,
    /// A block segment is sealed at this size.
    pub segment_max_bytes: u64,
    /// The audit log rotates at this size.
    pub audit_segment_max_bytes: u64,
    /// Rotated audit segments kept.
    pub audit_segments_kept: usize,
}

pub const DEFAULT_LIMIT_LEDGER_SLOTS: u64 = 100_000;
pub const DEFAULT_SNAPSHOT_INTERVAL_SLOTS: u64 = 1_000;

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            limit_ledger_slots: DEFAULT_LIMIT_LEDGER_SLOTS,
            snapshot_interval_slots: DEFAULT_SNAPSHOT_INTERVAL_SLOTS,
            snapshots_to_keep: 3,
            segment_max_bytes: 4 << 20,
            audit_segment_max_bytes: 64 << 20,
            audit_segments_kept: 16,
        }
    }
}

impl LedgerConfig {
    /// Refuses settings that cannot work, naming the flag.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.snapshot_interval_slots == 0 {
            anyhow::bail!("--snapshot-interval-slots must be at least 1");
        }
        if self.limit_ledger_slots < self.snapshot_interval_slots.max(MAX_ROOTED_BLOCKS) {
            anyhow::bail!(
                "--limit-ledger-slots {} is below what a restart needs: at least \
                 --snapshot-interval-slots ({}) and {MAX_ROOTED_BLOCKS}",
                self.limit_ledger_slots,
                self.snapshot_interval_slots
            );
        }
        Ok(())
    }
}

/// What a start found on disk.
pub struct Restored {
    /// The snapshot loaded (None: none verified, or none yet).
    pub snapshot: Option<RootSnapshot>,
    /// Newer snapshots that did not verify (already logged).
    pub rejected_snapshots: Vec<Rejected>,
    /// Damage found in the block store (already logged).
    pub damage: Vec<Damage>,
    /// Stored blocks from `MAX_ROOTED_BLOCKS` below the snapshot's slot on.
    pub blocks: Vec<Block>,
}

impl Restored {
    /// The core's starting state: the snapshot's bank (or genesis) and the blocks after it.
    pub fn into_core_ledger(self, genesis: &Genesis) -> Option<Ledger> {
        match self.snapshot {
            Some(s) => Some(Ledger {
                root_bank: s.bank,
                rooted_chain: s.rooted_chain,
                blocks: self.blocks,
            }),
            None if self.blocks.is_empty() => None,
            None => Some(Ledger {
                root_bank: Bank::genesis(genesis),
                rooted_chain: BTreeSet::new(),
                blocks: self.blocks,
            }),
        }
    }
}

pub struct LedgerFiles {
    dir: PathBuf,
    cfg: LedgerConfig,
    genesis_hash: Hash,
    blocks: BlockStore,
    snapshots: Snapshots,
    audit: AuditLog,
    last_snapshot: Option<Slot>,
}

impl LedgerFiles {
    /// Opens the ledger: the newest valid snapshot and the stored blocks after it.
    pub fn open(
        ledger: &Path,
        cfg: LedgerConfig,
        genesis_hash: Hash,
    ) -> anyhow::Result<(LedgerFiles, Restored)> {
        cfg.check()?;
        let (mut blocks, damage) = BlockStore::open(&ledger.join("blocks"), cfg.segment_max_bytes)?;
        import_block_files(&ledger.join("blocks"), &mut blocks)?;
        let snapshots = Snapshots::new(ledger, cfg.snapshots_to_keep)?;
        let (snapshot, rejected_snapshots) = snapshots.load_newest(genesis_hash);
        let from = snapshot
            .as_ref()
            .map_or(0, |s| s.slot().saturating_sub(MAX_ROOTED_BLOCKS));
        let restored_blocks = blocks.read_from(from)?;
        let audit = AuditLog::open(ledger, cfg.audit_segment_max_bytes, cfg.audit_segments_kept)?;
        let last_snapshot = snapshot.as_ref().map(|s| s.slot());
        Ok((
            LedgerFiles {
                dir: ledger.to_path_buf(),
                cfg,
                genesis_hash,
                blocks,
                snapshots,
                audit,
                last_snapshot,
            },
            Restored {
                snapshot,
                rejected_snapshots,
                damage,
                blocks: restored_blocks,
            },
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the ledger's disk takes a write now: writes one block's worth of bytes to
    /// `<ledger>/.write-check`, syncs it and removes it. The error names the file. A node
    /// checks this at start and while it cannot record, so that a full disk is known
    /// before it takes an identity, not at its first vote.
    pub fn check_writable(&self) -> anyhow::Result<()> {
        use std::io::Write;
        let path = self.dir.join(".write-check");
        let written = std::fs::File::create(&path).and_then(|mut f| {
            f.write_all(&[0u8; 4096])?;
            f.sync_data()
        });
        let _ = std::fs::remove_file(&path);
        written.with_context(|| {
            format!(
                "cannot write {} (the check that the ledger's disk takes writes)",
                path.display()
            )
        })
    }

    pub fn block_store(&self) -> &BlockStore {
        &self.blocks
    }

    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// Takes a snapshot fetched from a peer: verifies it (checksum, length, genesis),
    /// stores it as this ledger's newest snapshot, and returns it.
    pub fn adopt_snapshot(&mut self, bytes: &[u8]) -> anyhow::Result<RootSnapshot> {
        let snap = snapshots::decode(bytes, self.genesis_hash)?;
        let path = self.snapshots.path_of(snap.slot());
        blockstore::write_atomically(&path, bytes)?;
        self.last_snapshot = Some(snap.slot());
        Ok(snap)
    }

    /// Appends blocks not yet stored (durable after [`LedgerFiles::sync_blocks`]). Every
    /// block is tried; the error names the first that could not be written and how many
    /// were not (the caller decides how often to say so: a full disk fails every call).
    pub fn persist<'a>(
        &mut self,
        blocks: impl IntoIterator<Item = &'a Block>,
    ) -> anyhow::Result<()> {
        let mut failed = 0usize;
        let mut first: Option<anyhow::Error> = None;
        for b in blocks {
            if let Err(e) = self.blocks.append(b) {
                failed += 1;
                if first.is_none() {
                    first = Some(e.context(format!("cannot write block {} to the ledger", b.slot)));
                }
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(e.context(format!("{failed} block(s) not written to the ledger"))),
        }
    }

    /// Syncs the block store (one fdatasync).
    pub fn sync_blocks(&mut self) -> anyhow::Result<()> {
        self.blocks.sync()
    }

    /// Writes a snapshot when the root has moved a snapshot interval past the last one,
    /// then prunes blocks below the retention bound. `rooted_chain` is the core's.
    /// Returns the snapshot's path when one was written.
    pub fn maybe_snapshot(
        &mut self,
        root_bank: &Bank,
        rooted_chain: &BTreeSet<Slot>,
    ) -> anyhow::Result<Option<PathBuf>> {
        let root = root_bank.slot;
        if root == 0
            || self
                .last_snapshot
                .is_some_and(|l| root < l + self.cfg.snapshot_interval_slots)
        {
            return Ok(None);
        }
        let path = self
            .snapshots
            .write(self.genesis_hash, root_bank, rooted_chain)?;
        self.last_snapshot = Some(root);
        self.prune(root)?;
        Ok(Some(path))
    }

    /// Deletes block segments entirely below `root - limit` and below the oldest snapshot
    /// kept (a fallback to it must still find the blocks after it).
    pub fn prune(&mut self, root: Slot) -> anyhow::Result<usize> {
        let mut below = root.saturating_sub(self.cfg.limit_ledger_slots);
        if let Some(oldest) = self.snapshots.oldest_slot() {
            below = below.min(oldest.saturating_sub(MAX_ROOTED_BLOCKS));
        }
        self.blocks.prune_below(below)
    }

    /// Appends the vote to the audit log (durable after [`LedgerFiles::sync_audit`]).
    pub fn record_vote(
        &mut self,
        vote: &SignedVote,
        instance: &str,
        now_ms: u64,
    ) -> anyhow::Result<()> {
        self.audit.append(&AuditRecord::Vote(VoteRecord::from_vote(
            vote, instance, now_ms,
        )))
    }

    pub fn record_block(
        &mut self,
        block: &Block,
        instance: &str,
        now_ms: u64,
    ) -> anyhow::Result<()> {
        self.audit
            .append(&AuditRecord::Block(BlockRecord::from_block(
                block, instance, now_ms,
            )))
    }

    /// Makes the audit records appended so far durable (one fdatasync), and rotates.
    pub fn sync_audit(&mut self) -> anyhow::Result<()> {
        self.audit.sync()
    }

    pub fn audit_path(&self) -> &Path {
        self.audit.path()
    }
}

/// Moves blocks of the old layout (one `<slot>.bin` file per block) into the segment
/// store, then deletes the files. Unreadable files are reported by name and deleted
/// (their blocks are repaired from peers like any missing block).
fn import_block_files(dir: &Path, store: &mut BlockStore) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    files.sort();
    let mut imported = 0;
    for path in &files {
        match std::fs::read(path).ok().map(|b| huione_net::decode(&b)) {
            Some(Ok(huione_net::Message::Block(block))) => {
                store.append(&block)?;
                imported += 1;
            }
            _ => {
                tracing::warn!(file = %path.display(), "skipping an unreadable block file of the old layout; it will be repaired from peers")
            }
        }
    }
    store.sync()?;
    for path in &files {
        std::fs::remove_file(path).with_context(|| format!("cannot delete {}", path.display()))?;
    }
    blockstore::sync_dir(dir)?;
    tracing::info!(imported, files = files.len(), dir = %dir.display(),
        "moved blocks from the one-file-per-block layout into segment files");
    Ok(())
}

/// Fetches a peer's snapshot of its root (`GET /ledger-snapshot` on its JSON-RPC port,
/// through `huione_rpc::client`; at most 64 MiB, 30 s).
pub fn fetch_snapshot(addr: &str) -> anyhow::Result<Vec<u8>> {
    use huione_rpc::client::{blocking::RpcClient, ClientError, Endpoint};
    const MAX: usize = 64 << 20;
    let endpoint = Endpoint::parse(addr)
        .map_err(|e| anyhow::anyhow!("--snapshot-from {addr}: not a HOST:PORT ({e})"))?;
    let client = RpcClient::new(endpoint)
        .with_timeout(std::time::Duration::from_secs(30))
        .with_max_response_bytes(MAX);
    match client.get("/ledger-snapshot") {
        Ok(body) => Ok(body.to_vec()),
        Err(ClientError::Status { status, body, .. }) => {
            anyhow::bail!("{addr} has no snapshot to give (HTTP {status}: {body})")
        }
        Err(e @ ClientError::Unreachable { .. }) => Err(anyhow::anyhow!(e).context(format!(
            "cannot connect to --snapshot-from {addr} (its JSON-RPC port)"
        ))),
        Err(e) => Err(anyhow::anyhow!(e).context(format!("cannot read the snapshot from {addr}"))),
    }
}

/// Reads a ledger's genesis (`<ledger>/genesis.json`).
pub fn read_genesis(ledger: &Path) -> anyhow::Result<Genesis> {
    let path = ledger.join("genesis.json");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a huione genesis", path.display()))
}
