//! Fenced block production.
//!
//! A slot is led only when all of these hold: the schedule names our identity; we vote
//! under a fence, or are stepping down inside a claim we still hold; the slot is above
//! our floor (the claim stored by the previous holder) and not above our claim (extended
//! by confirmed stores); our clock is within bounds of the cluster's; one of our votes
//! since taking the identity has landed, or the block carries one and every slot since
//! the best block is ours (nobody else could have carried it), or the account never
//! voted; the driver can record the block ([`Core::set_recording`]: a block it cannot
//! record never leaves); and we have not produced it.

use huione_tower::Slot;

use super::{Command, Core, Role};
use crate::block::{Block, SignedVote, MAX_VOTES_PER_BLOCK};
use crate::genesis::LEADER_SLOTS;

/// Slots without a new block after which the chain counts as stalled.
const STALL_SLOTS: Slot = 2 * LEADER_SLOTS;

/// What lets a node lead: the floor, the confirmed claim, and whether a new vote landed.
struct LeaderRights {
    floor: Slot,
    claim: Option<Slot>,
    vote_landed: bool,
    first_new_vote: Option<Slot>,
    /// The last vote in our tower (possibly the previous holder's).
    last_voted: Option<Slot>,
}

impl Core {
    fn leader_rights(&self) -> Option<LeaderRights> {
        match &self.role {
            Role::Voting(v) => Some(LeaderRights {
                floor: v.floor,
                claim: v.claim,
                vote_landed: v.vote_landed,
                first_new_vote: v.first_new_vote,
                last_voted: v.tower.last_voted_slot(),
            }),
            Role::SteppingDown(s) => Some(LeaderRights {
                floor: s.floor,
                claim: Some(s.claim),
                vote_landed: s.vote_landed,
                first_new_vote: None,
                last_voted: None,
            }),
            _ => None,
        }
    }

    /// Why we may not lead `slot` on `parent` (None: we may).
    fn leader_fence_blocks(
        &mut self,
        r: &LeaderRights,
        slot: Slot,
        parent: Slot,
    ) -> Option<&'static str> {
        if slot <= r.floor {
            return Some("below the takeover floor");
        }
        if r.claim.is_none_or(|c| slot > c) {
            return Some("no confirmed store covers this slot");
        }
        if !self.recording {
            return Some("our ledger cannot record the block");
        }
        if !self.clock_ok() {
            return Some("our clock is too far from the cluster's");
        }
        if !r.vote_landed && !self.own_vote_can_land(r, slot, parent) {
            return Some("no vote since the identity change has landed yet");
        }
        None
    }

    /// The landed-vote rule waits for other leaders to carry our vote. It is waived when
    /// nobody else could: every slot after `parent` up to `slot` is ours, and either our
    /// block carries a new vote of ours or there is nothing new to vote on (the tower we
    /// took over already voted for `parent`: a primary killed just before its window);
    /// or the whole chain has stalled (e.g. every leader changed identity at once). The
    /// floor and claim still fence the slot.
    fn own_vote_can_land(&mut self, r: &LeaderRights, slot: Slot, parent: Slot) -> bool {
        if self.best_slot() + STALL_SLOTS < slot {
            return true;
        }
        let me = self.identity.pubkey();
        let only_ours = (parent + 1..slot).all(|s| self.schedule.leader_at(&self.genesis, s) == me);
        let carries_new_vote = r.first_new_vote.is_some_and(|first| {
            self.votes_for_block(parent)
                .iter()
                .any(|v| v.vote_account == self.cfg.vote_account && v.slot >= first)
        });
        let nothing_new_to_vote = r.last_voted.is_some_and(|l| l >= parent);
        only_ours && (carries_new_vote || nothing_new_to_vote)
    }

    pub(super) fn maybe_produce(&mut self, now_ms: u64) {
        let slot = self.genesis.slot_at(now_ms);
        if now_ms < self.genesis.slot_start_ms(slot) + self.cfg.produce_delay_ms
            || self.produced.contains_key(&slot)
        {
            return;
        }
        if self.schedule.leader_at(&self.genesis, slot) != self.identity.pubkey() {
            return;
        }
        let Some(rights) = self.leader_rights() else {
            return;
        };
        let parent = self.forks.fork_choice().best;
        if parent >= slot {
            return;
        }
        if self.leader_fence_blocks(&rights, slot, parent).is_some() {
            // Remember the slot so it is counted once, and never produced late.
            self.produced.insert(slot, Default::default());
            self.stats.leader_slots_fenced += 1;
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

    /// Before and during our leader slots, keep a confirmed claim F slots ahead: when
    /// the claim does not reach `slot(now) + F` and we lead a slot within the next F + 1
    /// slots, store the tower (no vote). That is at most one store per slot, and only
    /// around our own leader windows (votes renew the claim the rest of the time).
    pub(super) fn renew_leader_claim(&mut self, now_ms: u64) {
        let now_slot = self.genesis.slot_at(now_ms);
        let f = self.cfg.leader_fence_slots;
        let Role::Voting(v) = &self.role else { return };
        if !matches!(v.store, super::StoreState::Idle) || v.claim.is_some_and(|c| c >= now_slot + f)
        {
            return;
        }
        // A node that cannot record does not lead: a claim would only raise a taker's
        // floor over slots it cannot use.
        if !self.recording {
            return;
        }
        let (floor, me) = (v.floor, self.identity.pubkey());
        let leading_soon = (now_slot..=now_slot + f + 1)
            .any(|s| s > floor && self.schedule.leader_at(&self.genesis, s) == me);
        if leading_soon && self.clock_ok() {
            self.issue_store(now_ms, None);
        }
    }
}
