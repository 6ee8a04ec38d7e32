//! Block arrival: checks, replay into a bank, orphans and repair, gossip votes.

use huione_tower::Slot;

use super::{
    Command, Core, PeerId, Role, MAX_ORPHANS, MAX_REPAIR_BATCH, MAX_ROOTED_BLOCKS, MAX_VOTE_POOL,
};
use crate::block::{Block, SignedVote};
use crate::hash::Hash;

/// What happened to one received block.
enum Replayed {
    /// Replayed into a new bank at this slot.
    New(Slot),
    /// Waiting for its parent.
    Orphaned,
    /// Already had it, or dropped (counted).
    Nothing,
}

impl Core {
    /// A block arrived by broadcast. Replays it and any orphans it unblocks.
    pub fn on_block(&mut self, now_ms: u64, block: Block) -> Vec<Command> {
        self.receive_block(now_ms, block, true)
    }

    /// Blocks that arrived in a repair answer (not used to measure our clock: they are
    /// late by design).
    pub fn on_blocks(&mut self, now_ms: u64, blocks: Vec<Block>) -> Vec<Command> {
        let mut out = Vec::new();
        // Oldest first, so parents replay before children.
        let mut blocks = blocks;
        blocks.sort_by_key(|b| b.slot);
        for b in blocks.into_iter().take(MAX_REPAIR_BATCH) {
            out.extend(self.receive_block(now_ms, b, false));
        }
        out
    }

    pub(super) fn receive_block(
        &mut self,
        now_ms: u64,
        block: Block,
        broadcast: bool,
    ) -> Vec<Command> {
        if self.is_halted() {
            return Vec::new();
        }
        if block.leader != self.identity.pubkey() {
            self.heard_peer(now_ms);
        }
        // Only a broadcast block tells the time: a repaired one, or an orphan released
        // later, arrives late by design. Its parent need not be known: a node whose clock
        // runs behind drops blocks as from the future, and then lacks every next parent,
        // yet those arrivals are the very evidence that lets it accept them again.
        let mut sample = broadcast;
        // A stack of blocks to replay: this one, then the orphans each replay unblocks.
        let mut next = Some(block);
        let mut queue = Vec::new();
        while let Some(b) = next.take().or_else(|| queue.pop()) {
            if let Replayed::New(slot) = self.replay(now_ms, b, std::mem::take(&mut sample)) {
                queue.extend(self.take_orphans_of(slot));
            }
        }
        self.after_change(now_ms);
        self.take_outbox()
    }

    fn take_orphans_of(&mut self, parent: Slot) -> Vec<Block> {
        let hash = self.forks.bank(parent).map(|b| b.hash);
        let children: Vec<Slot> = self
            .orphans
            .iter()
            .filter(|(_, b)| b.parent_slot == parent && Some(b.parent_hash) == hash)
            .map(|(s, _)| *s)
            .collect();
        children
            .iter()
            .filter_map(|s| self.orphans.remove(s))
            .collect()
    }

    fn replay(&mut self, now_ms: u64, b: Block, sample_clock: bool) -> Replayed {
        let root = self.forks.root();
        if b.slot <= root {
            return Replayed::Nothing;
        }
        if let Some(bank) = self.forks.bank(b.slot) {
            if bank.hash != b.hash {
                // A second block for a slot: the leader equivocated. Keep the first.
                self.stats.duplicate_blocks_seen += 1;
            }
            return Replayed::Nothing;
        }
        let leader = self.schedule.leader_at(&self.genesis, b.slot);
        if b.check_integrity(&leader, self.verifier.as_ref()).is_err() {
            self.stats.blocks_dropped += 1;
            return Replayed::Nothing;
        }
        // A signed block of another leader newer than anything we have tells how far our
        // clock is from its leader's (blocks from the future included: they are the
        // evidence when we run behind).
        if sample_clock && leader != self.identity.pubkey() && b.slot > self.forks.highest_slot() {
            self.sample_clock(now_ms, b.slot, leader);
        }
        if self.too_far_ahead(now_ms, b.slot) {
            self.stats.blocks_dropped += 1;
            return Replayed::Nothing;
        }
        match self.forks.bank(b.parent_slot).map(|p| p.hash) {
            Some(h) if h == b.parent_hash => {
                let slot = b.slot;
                self.apply_block(b);
                Replayed::New(slot)
            }
            Some(_) => {
                self.stats.blocks_dropped += 1;
                Replayed::Nothing
            }
            None if b.parent_slot < root => {
                self.stats.blocks_dropped += 1;
                Replayed::Nothing
            }
            None => self.keep_orphan(now_ms, b),
        }
    }

    fn keep_orphan(&mut self, now_ms: u64, b: Block) -> Replayed {
        let (slot, hash) = (b.parent_slot, b.parent_hash);
        if self.orphans.len() >= MAX_ORPHANS {
            self.stats.orphans_dropped += 1;
            return Replayed::Nothing;
        }
        self.orphans.entry(b.slot).or_insert(b);
        self.request_repair(now_ms, slot, hash);
        Replayed::Orphaned
    }

    fn request_repair(&mut self, now_ms: u64, slot: Slot, hash: Hash) {
        let last = self.repair_asked_ms.get(&slot).copied();
        if last.is_some_and(|t| now_ms < t + self.cfg.repair_retry_ms) {
            return;
        }
        self.repair_asked_ms.insert(slot, now_ms);
        self.outbox.push(Command::RequestRepair { slot, hash });
    }

    /// Asks again for the parents of orphans still waiting.
    pub(super) fn retry_repairs(&mut self, now_ms: u64) {
        let missing: Vec<(Slot, Hash)> = self
            .orphans
            .values()
            .filter(|b| !self.orphans.contains_key(&b.parent_slot))
            .map(|b| (b.parent_slot, b.parent_hash))
            .collect();
        for (slot, hash) in missing {
            self.request_repair(now_ms, slot, hash);
        }
    }

    /// Replays `b` on its parent's bank (the parent is in the tree).
    fn apply_block(&mut self, b: Block) {
        let parent = self.forks.bank(b.parent_slot).expect("checked by caller");
        let mut bank = parent.child(b.slot, b.hash);
        for vote in &b.votes {
            let forks = &self.forks;
            let applied = bank.apply_vote(vote, self.verifier.as_ref(), |s| {
                forks.fork_hash(b.parent_slot, s)
            });
            if applied.is_err() {
                self.stats.votes_rejected += 1;
                continue;
            }
            // Applying a vote reads only the tree's banks, which these do not change, so
            // each applied vote is counted right away.
            self.stats.votes_applied += 1;
            let (account, slot) = (vote.vote_account, vote.slot);
            self.forks.observe_vote(account, slot, vote.hash);
            self.vote_pool.remove(&(account, slot));
            self.note_landed(account, slot);
        }
        self.forks.insert(b.parent_slot, bank);
        self.stats.blocks_replayed += 1;
        self.blockstore.insert(b.slot, b);
    }

    /// One of our votes since the last identity change is in a replayed block.
    fn note_landed(&mut self, account: huione_keys::Pubkey, slot: Slot) {
        if account != self.cfg.vote_account {
            return;
        }
        if let Role::Voting(v) = &mut self.role {
            if v.first_new_vote.is_some_and(|first| slot >= first) {
                v.vote_landed = true;
            }
        }
    }

    /// A vote arrived by gossip: counted for fork choice and pooled for our blocks.
    pub fn on_vote(&mut self, now_ms: u64, vote: SignedVote) -> Vec<Command> {
        if self.is_halted() {
            return Vec::new();
        }
        if !self.gossip_vote_ok(now_ms, &vote) {
            self.stats.gossip_votes_dropped += 1;
            return Vec::new();
        }
        if vote.vote_account != self.cfg.vote_account {
            self.heard_peer(now_ms);
        }
        self.forks
            .observe_vote(vote.vote_account, vote.slot, vote.hash);
        self.pool_vote(vote);
        self.take_outbox()
    }

    /// Keeps a vote for inclusion in our blocks (bounded).
    pub(super) fn pool_vote(&mut self, vote: SignedVote) {
        if self.vote_pool.len() < MAX_VOTE_POOL {
            self.vote_pool
                .entry((vote.vote_account, vote.slot))
                .or_insert(vote);
        }
    }

    fn gossip_vote_ok(&self, now_ms: u64, vote: &SignedVote) -> bool {
        if vote.slot <= self.forks.root() || self.too_far_ahead(now_ms, vote.slot) {
            return false;
        }
        let Some(account) = self.forks.root_bank().account(&vote.vote_account) else {
            return false;
        };
        account.authorized_voter == vote.voter && vote.check_signature(self.verifier.as_ref())
    }

    /// A peer asks for the block (`slot`, `hash`); we answer with it and its ancestors.
    pub fn on_repair_request(&mut self, from: PeerId, slot: Slot, hash: Hash) -> Vec<Command> {
        let mut blocks = Vec::new();
        let mut want = Some((slot, hash));
        while let Some((s, h)) = want {
            match self.blockstore.get(&s) {
                Some(b) if b.hash == h && blocks.len() < MAX_REPAIR_BATCH => {
                    want = Some((b.parent_slot, b.parent_hash));
                    blocks.push(b.clone());
                }
                _ => want = None,
            }
        }
        if blocks.is_empty() {
            return Vec::new();
        }
        vec![Command::SendRepair { to: from, blocks }]
    }

    /// [`Core::ledger`] of a process that is going away, moved instead of copied.
    pub fn into_ledger(self) -> super::Ledger {
        let (root_bank, rooted_chain) = self.forks.into_root();
        super::Ledger {
            root_bank,
            rooted_chain,
            blocks: self.blockstore.into_values().collect(),
        }
    }

    /// Drops everything older than the root that we no longer need.
    pub(super) fn prune_below_root(&mut self) {
        let root = self.forks.root();
        let keep_from = root.saturating_sub(MAX_ROOTED_BLOCKS);
        self.blockstore = self.blockstore.split_off(&keep_from);
        self.orphans = self.orphans.split_off(&(root + 1));
        self.repair_asked_ms.retain(|s, _| *s > root);
        self.vote_pool.retain(|(_, s), _| *s > root);
        self.produced = self.produced.split_off(&keep_from);
    }
}
