//! Tower BFT lockout rules (Solana's vote program and `consensus::Tower`).
//!
//! A vote on slot S with confirmation count c locks the voter out of every fork that
//! does not contain S until slot S + 2^c. A new vote first pops the votes whose lockout
//! has expired by the new slot, then pushes itself with count 1, and then every vote
//! that now has more votes stacked on top of it than its count gets its count doubled
//! (+1). When the stack is 31 deep, the bottom vote becomes the root.

use huione_keys::Pubkey;
use serde::{Deserialize, Serialize};

pub type Slot = u64;

/// Votes kept before the oldest becomes the root.
pub const MAX_LOCKOUT_HISTORY: usize = 31;
/// Depth in the (simulated) stack whose slot must have 2/3 of stake before we vote.
pub const VOTE_THRESHOLD_DEPTH: usize = 8;
/// Lockouts stop doubling past this count; 2^32 slots is already centuries.
const MAX_CONFIRMATION_COUNT: u32 = 32;

/// One vote in the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockout {
    pub slot: Slot,
    pub confirmation_count: u32,
}

impl Lockout {
    pub fn new(slot: Slot) -> Self {
        Lockout {
            slot,
            confirmation_count: 1,
        }
    }
    /// Number of slots this vote locks the voter out for: 2^confirmation_count.
    pub fn lockout(&self) -> u64 {
        1u64 << self.confirmation_count.min(MAX_CONFIRMATION_COUNT)
    }
    /// Last slot at which a vote on a fork without `self.slot` is still forbidden.
    pub fn last_locked_out_slot(&self) -> Slot {
        self.slot.saturating_add(self.lockout())
    }
    pub fn is_locked_out_at_slot(&self, slot: Slot) -> bool {
        self.last_locked_out_slot() >= slot
    }
}

/// The vote stack, oldest first, held inline: it is at most 31 deep, and towers are
/// copied with every bank a vote changes.
#[derive(Clone)]
struct Stack {
    votes: [Lockout; MAX_LOCKOUT_HISTORY],
    len: usize,
}

impl Stack {
    const EMPTY: Stack = Stack {
        votes: [Lockout {
            slot: 0,
            confirmation_count: 0,
        }; MAX_LOCKOUT_HISTORY],
        len: 0,
    };

    fn as_slice(&self) -> &[Lockout] {
        &self.votes[..self.len]
    }
    fn iter(&self) -> std::slice::Iter<'_, Lockout> {
        self.as_slice().iter()
    }
    fn iter_mut(&mut self) -> std::slice::IterMut<'_, Lockout> {
        self.votes[..self.len].iter_mut()
    }
    fn len(&self) -> usize {
        self.len
    }
    fn front(&self) -> Option<&Lockout> {
        self.as_slice().first()
    }
    fn back(&self) -> Option<&Lockout> {
        self.as_slice().last()
    }
    fn pop_back(&mut self) -> Option<Lockout> {
        let last = *self.back()?;
        self.len -= 1;
        Some(last)
    }
    fn pop_front(&mut self) -> Option<Lockout> {
        let first = *self.front()?;
        self.votes.copy_within(1..self.len, 0);
        self.len -= 1;
        Some(first)
    }
    /// Callers keep the stack at most [`MAX_LOCKOUT_HISTORY`] deep (a full stack's oldest
    /// vote becomes the root before a push).
    fn push_back(&mut self, l: Lockout) {
        self.votes[self.len] = l;
        self.len += 1;
    }
}

impl std::ops::Index<usize> for Stack {
    type Output = Lockout;
    fn index(&self, i: usize) -> &Lockout {
        &self.as_slice()[i]
    }
}

impl PartialEq for Stack {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}
impl Eq for Stack {}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What recording a vote did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    /// The vote was pushed; `new_root` is set when the stack overflowed into a new root.
    Recorded { new_root: Option<Slot> },
    /// The slot was not newer than the last vote; nothing changed.
    Ignored,
}

/// A validator's vote record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tower {
    pub node_pubkey: Pubkey,
    votes: Stack,
    root: Option<Slot>,
    last_vote_hash: [u8; 32],
    /// Unix time in milliseconds when the last vote was recorded.
    last_vote_timestamp_ms: Option<u64>,
    /// The highest slot the holder of this tower may lead by a store of this tower (its
    /// *leader claim*). Stored with the votes so that whoever takes the identity next
    /// starts leading above it: the taker's floor comes from storage, not from clocks.
    leader_claim: Option<Slot>,
}

impl Tower {
    pub fn new(node_pubkey: Pubkey) -> Self {
        Tower {
            node_pubkey,
            votes: Stack::EMPTY,
            root: None,
            last_vote_hash: [0; 32],
            last_vote_timestamp_ms: None,
            leader_claim: None,
        }
    }

    /// Rebuilds a tower from its parts (used by decoding); checks the stack is well formed.
    pub fn from_parts(
        node_pubkey: Pubkey,
        votes: Vec<Lockout>,
        root: Option<Slot>,
        last_vote_hash: [u8; 32],
        last_vote_timestamp_ms: Option<u64>,
    ) -> Result<Self, String> {
        if votes.len() > MAX_LOCKOUT_HISTORY {
            return Err(format!(
                "{} votes, at most {MAX_LOCKOUT_HISTORY}",
                votes.len()
            ));
        }
        for pair in votes.windows(2) {
            if pair[0].slot >= pair[1].slot {
                return Err("vote slots are not increasing".into());
            }
            if pair[0].confirmation_count <= pair[1].confirmation_count {
                return Err("confirmation counts are not decreasing".into());
            }
        }
        if let (Some(r), Some(first)) = (root, votes.first()) {
            if r >= first.slot {
                return Err("root is not below the oldest vote".into());
            }
        }
        let mut stack = Stack::EMPTY;
        for v in votes {
            stack.push_back(v);
        }
        Ok(Tower {
            node_pubkey,
            votes: stack,
            root,
            last_vote_hash,
            last_vote_timestamp_ms,
            leader_claim: None,
        })
    }

    /// The same tower carrying leader claim `claim` (used by decoding).
    pub fn with_leader_claim(mut self, claim: Option<Slot>) -> Self {
        self.leader_claim = claim;
        self
    }

    pub fn votes(&self) -> impl ExactSizeIterator<Item = &Lockout> + '_ {
        self.votes.iter()
    }
    pub fn root(&self) -> Option<Slot> {
        self.root
    }
    pub fn last_voted_slot(&self) -> Option<Slot> {
        self.votes.back().map(|l| l.slot)
    }
    pub fn last_vote_hash(&self) -> [u8; 32] {
        self.last_vote_hash
    }
    pub fn last_vote_timestamp_ms(&self) -> Option<u64> {
        self.last_vote_timestamp_ms
    }
    /// The highest slot a store of this tower lets its holder lead (None: no claim was
    /// ever recorded, e.g. a tower saved in format version 1).
    pub fn leader_claim(&self) -> Option<Slot> {
        self.leader_claim
    }
    /// Raises the leader claim to at least `slot`. Claims never go down, so the newest
    /// stored tower always carries the highest claim any earlier store carried.
    pub fn raise_leader_claim(&mut self, slot: Slot) {
        self.leader_claim = Some(self.leader_claim.map_or(slot, |c| c.max(slot)));
    }

    /// Records a vote for `slot` (block hash `hash`) at unix time `now_ms`.
    pub fn record_vote(&mut self, slot: Slot, hash: [u8; 32], now_ms: u64) -> VoteOutcome {
        let outcome = apply_vote(&mut self.votes, &mut self.root, slot);
        if matches!(outcome, VoteOutcome::Recorded { .. }) {
            self.last_vote_hash = hash;
            self.last_vote_timestamp_ms = Some(now_ms);
        }
        outcome
    }

    /// Would voting for `slot` break a lockout? `is_ancestor(s)` must answer whether
    /// slot `s` is an ancestor of `slot` on the fork being voted on.
    ///
    /// After simulating the vote, every vote still in the stack (other than `slot` itself)
    /// must be an ancestor of `slot`, and so must the root.
    pub fn is_locked_out(&self, slot: Slot, is_ancestor: impl Fn(Slot) -> bool) -> bool {
        if self.last_voted_slot().is_some_and(|last| slot <= last) {
            // Voting on an old slot again is never allowed (it is a double vote or a
            // vote on an older slot of some fork).
            return true;
        }
        // The stack and root as `apply_vote` would leave them, without copying the stack:
        // it pops the votes expired at `slot` from the top (unless the slot is at or below
        // the root, when it changes nothing), then, if the stack is still full, the oldest
        // vote becomes the root. Only the slots matter here, not the doubled counts.
        let ignored = self.root.is_some_and(|r| slot <= r);
        let kept = if ignored {
            self.votes.len()
        } else {
            self.votes
                .iter()
                .rposition(|v| v.is_locked_out_at_slot(slot))
                .map_or(0, |i| i + 1)
        };
        let root = match self.votes.front() {
            Some(oldest) if !ignored && kept == MAX_LOCKOUT_HISTORY => Some(oldest.slot),
            _ => self.root,
        };
        if self
            .votes
            .iter()
            .take(kept)
            .any(|v| v.slot != slot && !is_ancestor(v.slot))
        {
            return true;
        }
        root.is_some_and(|r| r != slot && !is_ancestor(r))
    }

    /// The vote at [`VOTE_THRESHOLD_DEPTH`] in the stack as it would be after voting for
    /// `slot`, if the stack is that deep: the slot that needs 2/3 of stake first.
    pub fn threshold_lockout(&self, slot: Slot) -> Option<Lockout> {
        let mut votes = self.votes.clone();
        let mut root = self.root;
        apply_vote(&mut votes, &mut root, slot);
        let len = votes.len();
        if len <= VOTE_THRESHOLD_DEPTH {
            return None;
        }
        Some(votes[len - 1 - VOTE_THRESHOLD_DEPTH])
    }

    /// Solana's vote threshold check: voting for `slot` is allowed if the stack would be
    /// shallower than the threshold depth, or the vote at that depth already has strictly
    /// more than `threshold` (e.g. 2/3) of `total_stake` voted on it (`voted_stake(s)`),
    /// as Agave's `fork_stake / total_stake > threshold_size`, or that vote was already
    /// locked with the same count before this vote.
    pub fn check_vote_threshold(
        &self,
        slot: Slot,
        voted_stake: impl Fn(Slot) -> u64,
        total_stake: u64,
        threshold_num: u64,
        threshold_den: u64,
    ) -> bool {
        let Some(lockout) = self.threshold_lockout(slot) else {
            return true;
        };
        let already = self.votes.iter().any(|v| *v == lockout);
        if already {
            return true;
        }
        let voted = voted_stake(lockout.slot) as u128;
        voted * threshold_den as u128 > total_stake as u128 * threshold_num as u128
    }
}

/// Solana's `process_next_vote_slot`.
fn apply_vote(votes: &mut Stack, root: &mut Option<Slot>, slot: Slot) -> VoteOutcome {
    if votes.back().is_some_and(|last| slot <= last.slot) {
        return VoteOutcome::Ignored;
    }
    if root.is_some_and(|r| slot <= r) {
        return VoteOutcome::Ignored;
    }
    // Pop votes whose lockout expired by this slot.
    while votes
        .back()
        .is_some_and(|last| !last.is_locked_out_at_slot(slot))
    {
        votes.pop_back();
    }
    let mut new_root = None;
    if votes.len() == MAX_LOCKOUT_HISTORY {
        let oldest = votes.pop_front().expect("stack is full");
        *root = Some(oldest.slot);
        new_root = Some(oldest.slot);
    }
    votes.push_back(Lockout::new(slot));
    // Double the lockouts that have enough votes stacked on them.
    let depth = votes.len();
    for (i, v) in votes.iter_mut().enumerate() {
        if depth > i + v.confirmation_count as usize
            && v.confirmation_count < MAX_CONFIRMATION_COUNT
        {
            v.confirmation_count += 1;
        }
    }
    VoteOutcome::Recorded { new_root }
}

#[cfg(test)]
mod tests;
