//! Ledger snapshots: the rooted state, so a restart replays only the blocks after it.
//!
//! ```text
//! <ledger>/snapshots/snapshot-<root slot:012>.json
//!   line 1: huione-snapshot 1 <sha256 of the body, hex> <body length>
//!   body:   JSON { genesis_hash, slot, hash, accounts: [...], rooted_chain: [...] }
//! ```
//!
//! A snapshot holds the root bank (every vote account: node, authorized voter, stake,
//! lockouts and root, credits), its slot and hash, and the rooted slots the core remembers
//! below the root (for lockout checks). The leader schedule depends only on the genesis and
//! the epoch, so nothing more is needed. Written atomically (temp file, fsync, rename,
//! fsync of the directory); the newest few are kept. A snapshot whose header, checksum,
//! length, genesis or contents are wrong is reported with its file name and skipped, and
//! the next older one is tried.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use huione_core::{Bank, Hash, Slot, VoteAccount};
use huione_keys::Pubkey;
use huione_tower::{Lockout, Tower};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::blockstore::write_atomically;

const MAGIC: &str = "huione-snapshot";
const VERSION: u32 = 1;

/// The rooted state a restart starts from.
#[derive(Clone, Debug)]
pub struct RootSnapshot {
    pub bank: Bank,
    pub rooted_chain: BTreeSet<Slot>,
}

impl RootSnapshot {
    pub fn slot(&self) -> Slot {
        self.bank.slot
    }
}

#[derive(Serialize, Deserialize)]
struct Body {
    genesis_hash: Hash,
    slot: Slot,
    hash: Hash,
    accounts: Vec<Account>,
    rooted_chain: Vec<Slot>,
}

#[derive(Serialize, Deserialize)]
struct Account {
    vote_account: Pubkey,
    node: Pubkey,
    authorized_voter: Pubkey,
    stake: u64,
    credits: u64,
    tower_node: Pubkey,
    votes: Vec<Lockout>,
    root: Option<Slot>,
    last_vote_hash: Hash,
    last_vote_timestamp_ms: Option<u64>,
}

/// A snapshot file that could not be used, and why.
#[derive(Clone, Debug)]
pub struct Rejected {
    pub file: PathBuf,
    pub reason: String,
}

pub struct Snapshots {
    dir: PathBuf,
    keep: usize,
}

impl Snapshots {
    pub fn new(ledger: &Path, keep: usize) -> anyhow::Result<Self> {
        let dir = ledger.join("snapshots");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Snapshots {
            dir,
            keep: keep.max(1),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("snapshot-{slot:012}.json"))
    }

    /// Snapshot files on disk, newest first.
    pub fn list(&self) -> Vec<(Slot, PathBuf)> {
        let mut v: Vec<(Slot, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let slot = name
                    .strip_prefix("snapshot-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((slot, e.path()))
            })
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.0));
        v
    }

    /// Writes a snapshot of `bank` (a rooted bank) and deletes the oldest beyond the bound.
    pub fn write(
        &self,
        genesis_hash: Hash,
        bank: &Bank,
        rooted_chain: &BTreeSet<Slot>,
    ) -> anyhow::Result<PathBuf> {
        let bytes = encode(genesis_hash, bank, rooted_chain)?;
        let path = self.path_of(bank.slot);
        write_atomically(&path, &bytes)?;
        for (_, old) in self.list().into_iter().skip(self.keep) {
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!(file = %old.display(), error = %e, "cannot delete an old snapshot");
            }
        }
        Ok(path)
    }

    /// The newest snapshot that verifies, and every newer one that did not (each is also
    /// logged with its file name and the reason).
    pub fn load_newest(&self, genesis_hash: Hash) -> (Option<RootSnapshot>, Vec<Rejected>) {
        let mut rejected = Vec::new();
        for (slot, path) in self.list() {
            match load(&path, genesis_hash).and_then(|s| {
                if s.slot() != slot {
                    bail!("it holds slot {}, its name says {slot}", s.slot());
                }
                Ok(s)
            }) {
                Ok(s) => return (Some(s), rejected),
                Err(e) => {
                    tracing::error!(file = %path.display(),
                        "snapshot cannot be used: {e:#}; trying the previous one");
                    rejected.push(Rejected {
                        file: path,
                        reason: format!("{e:#}"),
                    });
                }
            }
        }
        (None, rejected)
    }

    /// The oldest snapshot slot on disk (blocks after it must be kept for a fallback).
    pub fn oldest_slot(&self) -> Option<Slot> {
        self.list().last().map(|(s, _)| *s)
    }
}

pub fn encode(
    genesis_hash: Hash,
    bank: &Bank,
    rooted_chain: &BTreeSet<Slot>,
) -> anyhow::Result<Vec<u8>> {
    let body = Body {
        genesis_hash,
        slot: bank.slot,
        hash: bank.hash,
        accounts: bank
            .accounts()
            .map(|(k, a)| Account {
                vote_account: *k,
                node: a.node,
                authorized_voter: a.authorized_voter,
                stake: a.stake,
                credits: a.credits,
                tower_node: a.lockouts.node_pubkey,
                votes: a.lockouts.votes().copied().collect(),
                root: a.lockouts.root(),
                last_vote_hash: Hash(a.lockouts.last_vote_hash()),
                last_vote_timestamp_ms: a.lockouts.last_vote_timestamp_ms(),
            })
            .collect(),
        rooted_chain: rooted_chain.iter().copied().collect(),
    };
    let body = serde_json::to_vec(&body)?;
    let sum = Sha256::digest(&body);
    let mut out = format!("{MAGIC} {VERSION} {} {}\n", hex(&sum), body.len()).into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads and verifies one snapshot file.
pub fn load(path: &Path, genesis_hash: Hash) -> anyhow::Result<RootSnapshot> {
    let bytes = std::fs::read(path).context("cannot read it")?;
    decode(&bytes, genesis_hash)
}

pub fn decode(bytes: &[u8], genesis_hash: Hash) -> anyhow::Result<RootSnapshot> {
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .context("no header line (truncated?)")?;
    let header = std::str::from_utf8(&bytes[..nl]).context("the header is not text")?;
    let parts: Vec<&str> = header.split(' ').collect();
    let [magic, version, sum, len] = parts[..] else {
        bail!("bad header {header:?}");
    };
    if magic != MAGIC {
        bail!("not a huione snapshot (header {header:?})");
    }
    if version != VERSION.to_string() {
        bail!("snapshot format version {version}, this build reads {VERSION}");
    }
    let len: usize = len.parse().context("bad length in the header")?;
    let body = &bytes[nl + 1..];
    if body.len() != len {
        bail!(
            "truncated or extended: {} bytes of body, the header says {len}",
            body.len()
        );
    }
    if hex(&Sha256::digest(body)) != sum {
        bail!("checksum mismatch: the file is damaged");
    }
    let body: Body = serde_json::from_slice(body).context("the body does not parse")?;
    if body.genesis_hash != genesis_hash {
        bail!(
            "made for genesis {}, this ledger's genesis is {}",
            body.genesis_hash,
            genesis_hash
        );
    }
    let mut accounts = Vec::with_capacity(body.accounts.len());
    for a in body.accounts {
        let lockouts = Tower::from_parts(
            a.tower_node,
            a.votes,
            a.root,
            a.last_vote_hash.0,
            a.last_vote_timestamp_ms,
        )
        .map_err(|e| anyhow::anyhow!("vote account {}: bad lockouts: {e}", a.vote_account))?;
        accounts.push((
            a.vote_account,
            VoteAccount {
                node: a.node,
                authorized_voter: a.authorized_voter,
                stake: a.stake,
                lockouts,
                credits: a.credits,
            },
        ));
    }
    let mut rooted_chain: BTreeSet<Slot> = body.rooted_chain.into_iter().collect();
    if rooted_chain.last().is_some_and(|s| *s > body.slot) {
        bail!("the rooted chain goes past the snapshot's slot");
    }
    rooted_chain.insert(body.slot);
    Ok(RootSnapshot {
        bank: Bank::from_accounts(body.slot, body.hash, accounts),
        rooted_chain,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
