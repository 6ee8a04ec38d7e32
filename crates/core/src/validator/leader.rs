//! Fenced block production.
//!
//! A slot is led only when all of these hold: the schedule names our identity; we vote
//! under a fence; the slot is above our floor (set when we took the identity) and not
//! above our claim (extended by confirmed stores); one of our votes since taking the
//! identity has landed (or the account never voted); and we have not produced it.

use huione_tower::Slot;

use super::{Command, Core, Role, Voter};
use crate::block::{Block, SignedVote, MAX_VOTES_PER_BLOCK};
use crate::genesis::LEADER_SLOTS;

/// Slots without a new block after which the chain counts as stalled.
const STALL_SLOTS: Slot = 2 * LEADER_SLOTS;

impl Core {
    /// Why we may not lead `slot` (None: we may).
    fn leader_fence_blocks(&self, v: &Voter, slot: Slot) -> Option<&'static str> {
        // The landed-vote rule waits for other leaders to carry our vote. When the whole
        // chain has stalled (e.g. every leader changed identity at once) nobody would,
        // so it is waived; the floor and claim above still fence the slot.
        let stalled = self.best_slot() + STALL_SLOTS < slot;
        if slot <= v.floor {
            return Some("below the takeover floor");
        }
        if v.claim.is_none_or(|c| slot > c) {
            return Some("no confirmed store covers this slot");
        }
        if !v.vote_landed && !stalled {
            return Some("no vote since the identity change has landed yet");
        }
        None
    }

    pub(super) fn maybe_produce(&mut self, now_ms: u64) {
        let slot = self.genesis.slot_at(now_ms);
        if now_ms < self.genesis.slot_start_ms(slot) + self.cfg.produce_delay_ms
            || self.produced.contains_key(&slot)
        {
            return;
        }
        if !matches!(self.role, Role::Voting(_))
            || self.schedule.leader_at(&self.genesis, slot) != self.identity.pubkey()
        {
            return;
        }
        let Role::Voting(v) = &self.role else { return };
        if self.leader_fence_blocks(v, slot).is_some() {
            // Remember the slot so it is counted once, and never produced late.
            self.produced.insert(slot, Default::default());
            self.stats.leader_slots_fenced += 1;
            return;
        }
        let parent = self.forks.fork_choice().best;
        if parent >= slot {
            return;
        }
        self.produce(now_ms, slot, parent);
    }

    fn produce(&mut self, now_ms: u64, slot: Slot, parent: Slot) {
        let parent_hash = self
            .forks
            .bank(parent)
            .expect("best leaf is in the tree")
            .hash;
        let votes = self.votes_for_block(parent);
        let block = Block::produce_with(
            self.verifier.as_ref(),
            &self.identity,
            slot,
            parent,
            parent_hash,
            votes,
        );
        self.produced.insert(slot, block.hash);
        self.stats.blocks_produced += 1;
        self.outbox.push(Command::BroadcastBlock(block.clone()));
        self.on_block_internal(now_ms, block);
    }

    fn on_block_internal(&mut self, now_ms: u64, block: Block) {
        let cmds = self.on_block(now_ms, block);
        self.outbox.extend(cmds);
    }

    /// Pooled votes that will apply on `parent`'s fork: for an ancestor, newer than the
    /// account's last vote there.
    fn votes_for_block(&self, parent: Slot) -> Vec<SignedVote> {
        let bank = self.forks.bank(parent).expect("in tree");
        self.vote_pool
            .values()
            .filter(|vote| {
                self.forks.fork_hash(parent, vote.slot) == Some(vote.hash)
                    && bank
                        .account(&vote.vote_account)
                        .is_some_and(|a| a.lockouts.last_voted_slot().is_none_or(|l| vote.slot > l))
            })
            .take(MAX_VOTES_PER_BLOCK)
            .cloned()
            .collect()
    }

    /// Before our leader slots, make sure a recent confirmed store covers them: store the
    /// tower (no vote) if the claim runs out within half a fence window.
    pub(super) fn renew_leader_claim(&mut self, now_ms: u64) {
        let now_slot = self.genesis.slot_at(now_ms);
        let horizon = now_slot + (self.cfg.leader_fence_slots / 2).max(LEADER_SLOTS);
        let Role::Voting(v) = &self.role else { return };
        if !matches!(v.store, super::StoreState::Idle) || v.claim.is_some_and(|c| c >= horizon) {
            return;
        }
        let (floor, me) = (v.floor, self.identity.pubkey());
        let leading_soon = (now_slot..=horizon)
            .any(|s| s > floor && self.schedule.leader_at(&self.genesis, s) == me);
        if leading_soon {
            self.issue_store(now_ms, None);
        }
    }
}
