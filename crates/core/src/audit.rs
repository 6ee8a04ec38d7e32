//! The safety auditor: from what nodes recorded (votes sent, blocks produced), find
//! every double vote, lockout violation and duplicate block.
//!
//! Input is [`AuditRecord`], a plain serializable record that real processes can log as
//! JSON lines and the simulator feeds in as it runs. Checks:
//!
//! * **Double vote**: one vote account, one slot, two different hashes, or the same
//!   vote sent by two different instances (two machines voted).
//! * **Lockout violation**: replaying an account's votes in slot order through the
//!   Tower BFT lockout rules, a vote is on a fork that does not contain an earlier vote
//!   (or root) whose lockout still covers the new slot. Ancestry comes from the block
//!   records; a vote whose ancestry cannot be resolved is counted as unresolved, never
//!   reported.
//! * **Duplicate block**: one leader identity, one slot, two different hashes.
//!
//! Records may arrive in any order: a vote older than the account's newest re-audits
//! that account from scratch. For complete logs use [`Auditor::audit_all`], which feeds
//! blocks before votes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;

use huione_keys::Pubkey;
use huione_tower::{Slot, Tower};
use serde::{Deserialize, Serialize};

use crate::block::{Block, SignedVote};
use crate::hash::Hash;

/// Blocks walked back when resolving one vote's ancestry.
const MAX_ANCESTRY_WALK: usize = 100_000;

/// A vote as sent by one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRecord {
    pub vote_account: Pubkey,
    pub slot: Slot,
    pub hash: Hash,
    /// The identity that sent it.
    pub node: Pubkey,
    /// The sending process (two instances of one identity differ here).
    pub instance: String,
    pub time_ms: u64,
}

impl VoteRecord {
    pub fn from_vote(vote: &SignedVote, instance: &str, time_ms: u64) -> Self {
        VoteRecord {
            vote_account: vote.vote_account,
            slot: vote.slot,
            hash: vote.hash,
            node: vote.node,
            instance: instance.to_string(),
            time_ms,
        }
    }
}

/// A block as produced by one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub leader: Pubkey,
    pub slot: Slot,
    pub hash: Hash,
    pub parent_slot: Slot,
    pub parent_hash: Hash,
    pub instance: String,
    pub time_ms: u64,
}

impl BlockRecord {
    pub fn from_block(block: &Block, instance: &str, time_ms: u64) -> Self {
        BlockRecord {
            leader: block.leader,
            slot: block.slot,
            hash: block.hash,
            parent_slot: block.parent_slot,
            parent_hash: block.parent_hash,
            instance: instance.to_string(),
            time_ms,
        }
    }
}

/// One line of an audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditRecord {
    Vote(VoteRecord),
    Block(BlockRecord),
}

/// A broken safety invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    #[error(
        "double vote: account {vote_account} voted slot {slot} as {first_hash} (instance \
         {first_instance}) and as {second_hash} (instance {second_instance})"
    )]
    DoubleVote {
        vote_account: Pubkey,
        slot: Slot,
        first_hash: Hash,
        first_instance: String,
        second_hash: Hash,
        second_instance: String,
    },
    #[error(
        "lockout violation: account {vote_account} voted slot {slot} ({hash}, instance \
         {instance}) on a fork without slot {locked_slot}, which it had voted and which \
         locks it out until slot {locked_until}"
    )]
    LockoutViolation {
        vote_account: Pubkey,
        slot: Slot,
        hash: Hash,
        instance: String,
        locked_slot: Slot,
        locked_until: Slot,
    },
    #[error(
        "duplicate block: leader {leader} produced slot {slot} as {first_hash} and as \
         {second_hash} (instance {second_instance})"
    )]
    DuplicateBlock {
        leader: Pubkey,
        slot: Slot,
        first_hash: Hash,
        second_hash: Hash,
        second_instance: String,
    },
}

/// Why an audit log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    #[error("cannot read the audit log: {0}")]
    Io(#[from] std::io::Error),
    #[error("audit log line {line} is not a record: {source}")]
    BadLine {
        line: usize,
        source: serde_json::Error,
    },
}

#[derive(Clone, Copy, Debug)]
struct BlockInfo {
    slot: Slot,
    parent_hash: Hash,
}

#[derive(Debug)]
struct AccountAudit {
    votes: BTreeMap<Slot, (Hash, String)>,
    tower: Tower,
}

/// Incremental safety auditor. See the module docs.
#[derive(Debug)]
pub struct Auditor {
    genesis_hash: Hash,
    blocks: HashMap<Hash, BlockInfo>,
    by_leader_slot: HashMap<(Pubkey, Slot), Hash>,
    accounts: HashMap<Pubkey, AccountAudit>,
    reported: HashSet<(Pubkey, Slot)>,
    violations: Vec<Violation>,
    /// Votes whose ancestry was not in the block records (not checked for lockouts).
    pub unresolved_votes: u64,
    pub votes_seen: u64,
    pub blocks_seen: u64,
}

impl Auditor {
    /// `genesis_hash` is the parent hash of the first blocks (slot 0).
    pub fn new(genesis_hash: Hash) -> Self {
        Auditor {
            genesis_hash,
            blocks: HashMap::new(),
            by_leader_slot: HashMap::new(),
            accounts: HashMap::new(),
            reported: HashSet::new(),
            violations: Vec::new(),
            unresolved_votes: 0,
            votes_seen: 0,
            blocks_seen: 0,
        }
    }

    /// Every violation found so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Audits one record; returns the violations it revealed.
    pub fn record(&mut self, r: &AuditRecord) -> Vec<Violation> {
        let before = self.violations.len();
        match r {
            AuditRecord::Block(b) => self.record_block(b),
            AuditRecord::Vote(v) => self.record_vote(v),
        }
        self.violations[before..].to_vec()
    }

    /// Audits a complete log: blocks first (so every ancestry resolves), then votes.
    pub fn audit_all(genesis_hash: Hash, records: &[AuditRecord]) -> Self {
        let mut a = Auditor::new(genesis_hash);
        let (blocks, votes): (Vec<_>, Vec<_>) = records
            .iter()
            .partition(|r| matches!(r, AuditRecord::Block(_)));
        for r in blocks.into_iter().chain(votes) {
            a.record(r);
        }
        a
    }

    /// Reads JSON lines (one [`AuditRecord`] per line; blank lines are skipped).
    pub fn read_json_lines(reader: impl BufRead) -> Result<Vec<AuditRecord>, AuditLogError> {
        let mut out = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let rec = serde_json::from_str(&line).map_err(|source| AuditLogError::BadLine {
                line: i + 1,
                source,
            })?;
            out.push(rec);
        }
        Ok(out)
    }

    fn record_block(&mut self, b: &BlockRecord) {
        self.blocks_seen += 1;
        self.blocks.insert(
            b.hash,
            BlockInfo {
                slot: b.slot,
                parent_hash: b.parent_hash,
            },
        );
        let first = *self
            .by_leader_slot
            .entry((b.leader, b.slot))
            .or_insert(b.hash);
        if first != b.hash {
            self.violations.push(Violation::DuplicateBlock {
                leader: b.leader,
                slot: b.slot,
                first_hash: first,
                second_hash: b.hash,
                second_instance: b.instance.clone(),
            });
        }
    }

    fn record_vote(&mut self, v: &VoteRecord) {
        self.votes_seen += 1;
        let account = self
            .accounts
            .entry(v.vote_account)
            .or_insert_with(|| AccountAudit {
                votes: BTreeMap::new(),
                tower: Tower::new(v.vote_account),
            });
        if let Some((hash, instance)) = account.votes.get(&v.slot) {
            if *hash != v.hash || *instance != v.instance {
                let d = Violation::DoubleVote {
                    vote_account: v.vote_account,
                    slot: v.slot,
                    first_hash: *hash,
                    first_instance: instance.clone(),
                    second_hash: v.hash,
                    second_instance: v.instance.clone(),
                };
                self.violations.push(d);
            }
            return;
        }
        let in_order = account
            .votes
            .last_key_value()
            .is_none_or(|(s, _)| *s < v.slot);
        account.votes.insert(v.slot, (v.hash, v.instance.clone()));
        if in_order {
            let mut tower = std::mem::replace(&mut account.tower, Tower::new(v.vote_account));
            self.check_and_record(&mut tower, v.vote_account, v.slot, v.hash, &v.instance);
            self.accounts
                .get_mut(&v.vote_account)
                .expect("inserted")
                .tower = tower;
        } else {
            self.reaudit(v.vote_account);
        }
    }

    /// Replays all of an account's votes in slot order (after an out-of-order record).
    fn reaudit(&mut self, vote_account: Pubkey) {
        let votes: Vec<(Slot, Hash, String)> = self.accounts[&vote_account]
            .votes
            .iter()
            .map(|(s, (h, i))| (*s, *h, i.clone()))
            .collect();
        let mut tower = Tower::new(vote_account);
        for (slot, hash, instance) in votes {
            self.check_and_record(&mut tower, vote_account, slot, hash, &instance);
        }
        self.accounts.get_mut(&vote_account).expect("exists").tower = tower;
    }

    fn check_and_record(
        &mut self,
        tower: &mut Tower,
        account: Pubkey,
        slot: Slot,
        hash: Hash,
        instance: &str,
    ) {
        if let Some(locked) = self.lockout_broken(tower, slot, hash) {
            if self.reported.insert((account, slot)) {
                self.violations.push(Violation::LockoutViolation {
                    vote_account: account,
                    slot,
                    hash,
                    instance: instance.to_string(),
                    locked_slot: locked.0,
                    locked_until: locked.1,
                });
            }
        }
        tower.record_vote(slot, hash.0, 0);
    }

    /// The (slot, locked-until) of a vote in `tower` that voting (`slot`, `hash`) breaks.
    fn lockout_broken(&mut self, tower: &Tower, slot: Slot, hash: Hash) -> Option<(Slot, Slot)> {
        let oldest = tower
            .root()
            .or_else(|| tower.votes().next().map(|l| l.slot))?;
        let Some(ancestors) = self.ancestors(hash, oldest) else {
            self.unresolved_votes += 1;
            return None;
        };
        if !tower.is_locked_out(slot, |s| ancestors.contains(&s)) {
            return None;
        }
        let broken = tower
            .votes()
            .find(|l| !ancestors.contains(&l.slot) && l.is_locked_out_at_slot(slot))
            .map(|l| (l.slot, l.last_locked_out_slot()));
        // Otherwise the root is off this fork: it never expires.
        Some(broken.unwrap_or((tower.root().unwrap_or(0), Slot::MAX)))
    }

    /// Slots of the strict ancestors of block `hash`, down to `oldest` (None if the
    /// records do not reach that far).
    fn ancestors(&self, hash: Hash, oldest: Slot) -> Option<HashSet<Slot>> {
        let mut out = HashSet::new();
        let mut cur = self.blocks.get(&hash)?.parent_hash;
        for _ in 0..MAX_ANCESTRY_WALK {
            if cur == self.genesis_hash {
                out.insert(0);
                return Some(out);
            }
            let info = self.blocks.get(&cur)?;
            out.insert(info.slot);
            if info.slot <= oldest {
                return Some(out);
            }
            cur = info.parent_hash;
        }
        None
    }
}

#[cfg(test)]
mod tests;
