//! Fork choice → tower checks → record → store → (confirmed) → send.

use huione_tower::{SavedTower, Slot, VoteOutcome};

use super::{Command, Core, ExitReason, PlantedBug, Role, StoreState, Voter};
use crate::block::SignedVote;
use crate::fence::{OutgoingVote, StoreFailure, StoreReport, StoreTicket};
use crate::forks::Weights;

/// Vote threshold: the vote at depth 8 needs strictly more than 2/3 of stake.
const THRESHOLD: (u64, u64) = (2, 3);
/// Switching forks needs 38% of stake voting on other forks.
const SWITCH_PERCENT: u64 = 38;

/// Which tower rule keeps the node from voting, on which slot, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteWithheld {
    pub rule: WithheldRule,
    /// The best slot the node would vote on.
    pub slot: Slot,
    /// For a lockout: the first slot at which the blocking lockouts have expired.
    pub until_slot: Option<Slot>,
}

/// Why the core did not vote for the best slot (counters, metrics, `monitor`, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WithheldRule {
    /// An earlier vote on another fork is still locked out.
    Lockout,
    /// The vote at depth 8 lacks 2/3 of the stake.
    Threshold,
    /// Switching forks needs 38% of the stake on other forks.
    Switch,
    /// Nothing from any other validator for longer than `peer_silence_limit_ms`.
    Isolated,
    /// The driver cannot record our votes and blocks (a full ledger disk):
    /// [`Core::set_recording`].
    Unrecordable,
}

impl WithheldRule {
    pub fn as_str(self) -> &'static str {
        match self {
            WithheldRule::Lockout => "lockout",
            WithheldRule::Threshold => "threshold",
            WithheldRule::Switch => "switch",
            WithheldRule::Isolated => "isolated",
            WithheldRule::Unrecordable => "unrecordable",
        }
    }
}

impl Core {
    /// After anything that can change fork choice: roots, confirmation, maybe a vote.
    pub(super) fn after_change(&mut self, now_ms: u64) {
        if self.is_halted() {
            return;
        }
        let choice = self.forks.fork_choice();
        self.update_optimistic(choice.best, &choice.weights);
        self.advance_supermajority_root(choice.best);
        // The root may have moved: fork choice again on the pruned tree.
        let choice = self.forks.fork_choice();
        self.maybe_vote(now_ms, choice.best, &choice.weights);
    }

    fn update_optimistic(&mut self, best: Slot, weights: &Weights) {
        let mut cur = Some(best);
        while let Some(s) = cur.filter(|s| *s > self.optimistic_slot) {
            if self.has_supermajority(weights.get(&s).copied().unwrap_or(0)) {
                self.optimistic_slot = s;
                return;
            }
            // Below the root nothing has a weight, so the walk ends there.
            cur = self.forks.parent(s);
        }
    }

    /// Strictly more than 2/3 of stake, as Agave (`stake / total > VOTE_THRESHOLD_SIZE`).
    fn has_supermajority(&self, stake: u64) -> bool {
        stake as u128 * THRESHOLD.1 as u128 > self.total_stake as u128 * THRESHOLD.0 as u128
    }

    /// Roots the highest slot that 2/3 of stake have rooted on the best fork. This is how
    /// a node that does not vote (a standby) still prunes; a voter's own tower root is
    /// applied as well in [`Core::set_root`].
    fn advance_supermajority_root(&mut self, best: Slot) {
        // Remembered per bank: it depends on the bank's vote accounts and fixed stakes.
        let root = self
            .forks
            .bank_root(best, |bank| self.supermajority_root(bank));
        if let Some(root) = root {
            self.set_root(root);
        }
    }

    /// The highest root that 2/3 of stake have rooted in `bank`'s vote accounts.
    fn supermajority_root(&self, bank: &crate::bank::Bank) -> Option<Slot> {
        let mut roots: Vec<(Slot, u64)> = bank
            .accounts()
            .filter_map(|(k, a)| a.lockouts.root().map(|r| (r, self.forks.stake_of(k))))
            .collect();
        roots.sort_unstable_by(|a, b| b.cmp(a));
        let mut acc = 0u64;
        for (root, stake) in roots {
            acc += stake;
            if self.has_supermajority(acc) {
                return Some(root);
            }
        }
        None
    }

    pub(super) fn set_root(&mut self, slot: Slot) {
        if slot > self.forks.root() && self.forks.contains(slot) {
            self.forks.set_root(slot);
            self.stats.roots_set += 1;
            self.prune_below_root();
        }
    }

    fn maybe_vote(&mut self, now_ms: u64, best: Slot, weights: &Weights) {
        let Role::Voting(v) = &self.role else { return };
        if !matches!(v.store, StoreState::Idle) || best <= self.forks.root() {
            return;
        }
        if v.tower.last_voted_slot().is_some_and(|last| best <= last) {
            return;
        }
        if !self.account_is_ours(best) {
            return;
        }
        let check = if !self.recording {
            Err(WithheldRule::Unrecordable)
        } else if self.isolated(now_ms) {
            Err(WithheldRule::Isolated)
        } else {
            self.vote_check(v, best, weights)
        };
        let until_slot = (check == Err(WithheldRule::Lockout)).then(|| {
            let ancestry = self.forks.ancestry(best);
            v.tower
                .votes()
                .filter(|l| !ancestry.is_ancestor(l.slot))
                .map(|l| l.last_locked_out_slot() + 1)
                .max()
                .unwrap_or(best)
        });
        self.stats.withheld = check.err().map(|rule| VoteWithheld {
            rule,
            slot: best,
            until_slot,
        });
        match check {
            Ok(()) => self.cast_vote(now_ms, best),
            Err(WithheldRule::Lockout) => self.stats.locked_out += 1,
            Err(WithheldRule::Threshold) => self.stats.threshold_failed += 1,
            Err(WithheldRule::Switch) => self.stats.switch_failed += 1,
            Err(WithheldRule::Isolated) => self.stats.isolated_withheld += 1,
            Err(WithheldRule::Unrecordable) => self.stats.unrecordable_withheld += 1,
        }
    }

    /// The vote account still names our identity as its node on this fork.
    fn account_is_ours(&self, slot: Slot) -> bool {
        let bank = self.forks.bank(slot).expect("best slot is in the tree");
        bank.account(&self.cfg.vote_account)
            .is_some_and(|a| a.node == self.identity.pubkey())
    }

    fn vote_check(&self, v: &Voter, slot: Slot, weights: &Weights) -> Result<(), WithheldRule> {
        let ancestry = self.forks.ancestry(slot);
        if v.tower.is_locked_out(slot, |s| ancestry.is_ancestor(s)) {
            return Err(WithheldRule::Lockout);
        }
        let voted = |s: Slot| match weights.get(&s) {
            Some(w) => *w,
            // Rooted ancestors are final.
            None if ancestry.is_ancestor(s) => self.total_stake,
            None => 0,
        };
        if !v
            .tower
            .check_vote_threshold(slot, voted, self.total_stake, THRESHOLD.0, THRESHOLD.1)
        {
            return Err(WithheldRule::Threshold);
        }
        if !self.switch_allowed(v, slot) {
            return Err(WithheldRule::Switch);
        }
        Ok(())
    }

    /// Switching away from the fork of our last vote needs 38% of stake on other forks.
    fn switch_allowed(&self, v: &Voter, slot: Slot) -> bool {
        let Some(last) = v.tower.last_voted_slot() else {
            return true;
        };
        if !self.forks.contains(last) || self.forks.is_ancestor(last, slot) {
            return true;
        }
        let elsewhere: u64 = self
            .stakes
            .iter()
            .filter(|(k, _)| **k != self.cfg.vote_account)
            .filter_map(|(k, stake)| self.forks.latest_vote(k).map(|(s, _)| (s, *stake)))
            .filter(|(s, _)| {
                self.forks.contains(*s)
                    && *s != last
                    && !self.forks.is_ancestor(*s, last)
                    && !self.forks.is_ancestor(last, *s)
            })
            .map(|(_, stake)| stake)
            .sum();
        elsewhere as u128 * 100 >= self.total_stake as u128 * SWITCH_PERCENT as u128
    }

    /// Records the vote in the tower and asks for the tower to be stored. The vote
    /// itself is withheld until the store is confirmed.
    fn cast_vote(&mut self, now_ms: u64, slot: Slot) {
        let hash = self.forks.bank(slot).expect("in tree").hash;
        let node = self.identity.pubkey();
        let vote_account = self.cfg.vote_account;
        let Role::Voting(v) = &mut self.role else {
            return;
        };
        let new_root = match v.tower.record_vote(slot, hash.0, now_ms) {
            VoteOutcome::Recorded { new_root } => new_root,
            VoteOutcome::Ignored => return,
        };
        let vote = SignedVote::sign_with(
            self.verifier.as_ref(),
            &v.voter_key,
            vote_account,
            node,
            slot,
            hash,
            now_ms,
        );
        v.first_new_vote.get_or_insert(slot);
        self.stats.votes_decided += 1;
        self.forks.observe_vote(vote_account, slot, hash);
        if self.cfg.planted(PlantedBug::SendBeforeStore) {
            self.stats.votes_sent += 1;
            self.outbox.push(Command::SendVote(OutgoingVote::new(vote)));
            self.issue_store(now_ms, None);
        } else {
            self.issue_store(now_ms, Some(vote));
        }
        if let Some(r) = new_root {
            self.set_root(r);
        }
    }

    /// Emits a store of the current tower under the current fence.
    pub(super) fn issue_store(&mut self, now_ms: u64, vote: Option<SignedVote>) {
        let issued_slot = self.genesis.slot_at(now_ms);
        let seq = self.next_seq;
        self.next_seq += 1;
        let clock_ok = self.clock_ok();
        let Role::Voting(v) = &mut self.role else {
            return;
        };
        // The claim goes into the stored tower before the store is issued, so storage
        // always holds at least every claim that can be confirmed. A clock too far off
        // raises no claim (we will not lead with it).
        if clock_ok {
            v.tower
                .raise_leader_claim(issued_slot + self.cfg.leader_fence_slots);
        }
        let claim = v.tower.leader_claim();
        // Signed through the verifier: ed25519 in a real node, the simulator's own scheme
        // in the simulator (checked the same way when the tower is loaded).
        let verifier = self.verifier.as_ref();
        let saved = match SavedTower::new_with(&v.tower, &self.identity, |k, m| verifier.sign(k, m))
        {
            Ok(s) => s,
            Err(e) => return self.halt(ExitReason::Internal(format!("cannot sign tower: {e}"))),
        };
        v.store = StoreState::InFlight {
            seq,
            vote,
            issued_ms: self.mono_ms,
        };
        let ticket = StoreTicket::new(seq, v.fence, saved, issued_slot, claim);
        self.outbox.push(Command::StoreTower(ticket));
    }

    /// The driver reports how a store went.
    pub fn on_store_report(&mut self, now_ms: u64, report: StoreReport) -> Vec<Command> {
        let Role::Voting(v) = &mut self.role else {
            return self.take_outbox();
        };
        let current = matches!(v.store, StoreState::InFlight { seq, .. } if seq == report.seq);
        if !current || report.fence != v.fence {
            // From before an identity change or a retry: its vote is not ours to send.
            self.stats.stale_store_reports += 1;
            return self.take_outbox();
        }
        let StoreState::InFlight {
            vote, issued_ms, ..
        } = std::mem::replace(&mut v.store, StoreState::Idle)
        else {
            unreachable!("checked above")
        };
        match report.outcome {
            Ok(_) => self.store_confirmed(now_ms, report.claim, vote),
            // A receipt for another store confirms nothing: withheld and retried.
            Err(StoreFailure::Unavailable(_) | StoreFailure::BadReceipt(_)) => {
                self.store_unavailable(issued_ms, vote)
            }
            // This process is taking the identity again (it acquired the lock anew): not
            // a lost lock; retried until the switch replaces this voter, or fenced out for
            // good if that takeover gives the lock up.
            Err(StoreFailure::LockLost(_)) if self.store_superseded(&report.fence) => {
                self.store_unavailable(issued_ms, vote)
            }
            Err(StoreFailure::LockLost(detail)) => {
                self.step_down(now_ms, ExitReason::LockLost(detail))
            }
        }
        self.take_outbox()
    }

    fn store_confirmed(&mut self, now_ms: u64, claim: Option<Slot>, vote: Option<SignedVote>) {
        let Role::Voting(v) = &mut self.role else {
            return;
        };
        if let Some(claim) = claim {
            v.claim = Some(v.claim.map_or(claim, |c| c.max(claim)));
        }
        v.outage_since_ms = None;
        self.record_finished();
        if let Some(vote) = vote {
            self.stats.votes_sent += 1;
            // Our own blocks carry our votes too, as Solana's leaders do: a lone
            // validator's votes land, and a leader's vote does not wait for another leader.
            self.pool_vote(vote.clone());
            self.outbox.push(Command::SendVote(OutgoingVote::new(vote)));
        }
        self.after_change(now_ms);
    }

    fn store_unavailable(&mut self, issued_ms: u64, vote: Option<SignedVote>) {
        self.stats.store_failures += 1;
        let limit = self.cfg.max_store_outage_ms;
        let Role::Voting(v) = &mut self.role else {
            return;
        };
        // The outage began when the first store that failed was issued, not when the
        // storage's deadline finally reported it.
        // Monotonic time: a wall-clock step cannot end a healthy node (it used to be
        // `now_ms - since` on wall-clock ms, which underflowed when the clock stepped
        // back).
        let since = *v.outage_since_ms.get_or_insert(issued_ms);
        let outage_ms = self.mono_ms.saturating_sub(since);
        if limit.is_some_and(|l| outage_ms > l) {
            return self.halt(ExitReason::StorageOutage { outage_ms });
        }
        v.store = StoreState::Retry {
            at_ms: self.mono_ms + self.cfg.store_retry_ms,
            vote,
        };
    }

    /// Halts when stores have not succeeded for longer than `max_store_outage_ms`,
    /// counting a store still in flight (a frozen storage may not answer for a while).
    pub(super) fn check_store_outage(&mut self) {
        let Some(limit) = self.cfg.max_store_outage_ms else {
            return;
        };
        let Role::Voting(v) = &self.role else {
            return;
        };
        let in_flight_since = match v.store {
            StoreState::InFlight { issued_ms, .. } => Some(issued_ms),
            _ => None,
        };
        let since = match (v.outage_since_ms, in_flight_since) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(s) => s,
                None => return,
            },
        };
        let outage_ms = self.mono_ms.saturating_sub(since);
        if outage_ms > limit {
            self.halt(ExitReason::StorageOutage { outage_ms });
        }
    }

    /// Re-issues a store that failed transiently, with the same withheld vote.
    pub(super) fn retry_store(&mut self, now_ms: u64) {
        let Role::Voting(v) = &mut self.role else {
            return;
        };
        let mono = self.mono_ms;
        let due = matches!(v.store, StoreState::Retry { at_ms, .. } if mono >= at_ms);
        if !due {
            return;
        }
        let StoreState::Retry { vote, .. } = std::mem::replace(&mut v.store, StoreState::Idle)
        else {
            unreachable!("checked above")
        };
        self.issue_store(now_ms, vote);
    }
}
