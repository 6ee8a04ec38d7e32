//! The ledger directory: blocks on disk (for restart and catch-up) and the audit log of
//! every vote this process sent and every block it produced (read by the auditor).
//!
//! Layout: `<ledger>/genesis.json`, `<ledger>/blocks/<slot>.bin` (one wire-encoded block
//! per file, written with a rename so a crash never leaves half a block),
//! `<ledger>/audit.jsonl`, `<ledger>/admin.rpc`.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use huione_core::audit::{AuditRecord, BlockRecord, VoteRecord};
use huione_core::{Block, SignedVote, Slot};
use huione_net::Message;

/// Bound on blocks read back at start (a local cluster runs for hours at most).
const MAX_BLOCKS_ON_START: usize = 200_000;

pub struct LedgerFiles {
    blocks_dir: PathBuf,
    persisted: BTreeSet<Slot>,
    audit: File,
    audit_path: PathBuf,
}

impl LedgerFiles {
    /// Opens the ledger and returns the blocks found on disk, in slot order.
    pub fn open(ledger: &Path) -> anyhow::Result<(LedgerFiles, Vec<Block>)> {
        let blocks_dir = ledger.join("blocks");
        std::fs::create_dir_all(&blocks_dir)
            .with_context(|| format!("cannot create {}", blocks_dir.display()))?;
        let mut blocks = Vec::new();
        let mut persisted = BTreeSet::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&blocks_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "bin"))
            .collect();
        entries.sort();
        for path in entries.into_iter().take(MAX_BLOCKS_ON_START) {
            match std::fs::read(&path).ok().map(|b| huione_net::decode(&b)) {
                Some(Ok(Message::Block(block))) => {
                    persisted.insert(block.slot);
                    blocks.push(block);
                }
                _ => {
                    tracing::warn!(file = %path.display(), "skipping an unreadable block file; it will be repaired from peers")
                }
            }
        }
        blocks.sort_by_key(|b| b.slot);
        let audit_path = ledger.join("audit.jsonl");
        let audit = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&audit_path)
            .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;
        Ok((
            LedgerFiles {
                blocks_dir,
                persisted,
                audit,
                audit_path,
            },
            blocks,
        ))
    }

    /// Writes blocks not yet on disk.
    pub fn persist<'a>(&mut self, blocks: impl IntoIterator<Item = &'a Block>) {
        for b in blocks {
            if self.persisted.contains(&b.slot) {
                continue;
            }
            let Ok(bytes) = huione_net::encode(&Message::Block(b.clone())) else {
                continue;
            };
            let path = self.blocks_dir.join(format!("{:012}.bin", b.slot));
            let tmp = self.blocks_dir.join(format!(".{:012}.tmp", b.slot));
            let ok = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
            match ok {
                Ok(()) => {
                    self.persisted.insert(b.slot);
                }
                Err(e) => {
                    tracing::warn!(slot = b.slot, error = %e, "cannot write a block to the ledger")
                }
            }
        }
    }

    /// Appends the vote to the audit log before it is sent. An audit log that cannot be
    /// written is an error: the vote is then not sent.
    pub fn record_vote(
        &mut self,
        vote: &SignedVote,
        instance: &str,
        now_ms: u64,
    ) -> anyhow::Result<()> {
        self.append(&AuditRecord::Vote(VoteRecord::from_vote(
            vote, instance, now_ms,
        )))
    }

    pub fn record_block(
        &mut self,
        block: &Block,
        instance: &str,
        now_ms: u64,
    ) -> anyhow::Result<()> {
        self.append(&AuditRecord::Block(BlockRecord::from_block(
            block, instance, now_ms,
        )))
    }

    fn append(&mut self, r: &AuditRecord) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        self.audit
            .write_all(&line)
            .and_then(|()| self.audit.flush())
            .with_context(|| {
                format!(
                    "cannot append to the audit log {}",
                    self.audit_path.display()
                )
            })
    }
}
