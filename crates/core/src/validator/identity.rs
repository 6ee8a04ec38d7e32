//! Taking an identity (startup, restart, set-identity) and the duplicate-instance rule.

use huione_keys::Keypair;
use huione_tower::{SavedTower, Tower};

use super::{
    Command, Core, CoreError, InstanceAnnouncement, PlantedBug, Role, StoreState, Voter,
    LEGACY_LEADER_FENCE_SLOTS, MAX_INSTANCE_ID_LEN,
};
use crate::fence::Fence;

/// "Your identity is now X; here is X's tower as stored, and the lock you hold for X."
/// The driver acquires the lock first, then loads the tower, then calls
/// [`Core::set_identity`]: loading after acquiring is what guarantees the tower is the
/// newest one any earlier holder could have stored.
#[derive(Debug)]
pub struct IdentityChange {
    pub keypair: Keypair,
    /// The stored tower (None if this identity never stored one).
    pub tower: Option<SavedTower>,
    pub fence: Fence,
}

impl Core {
    /// Starts voting as `change.keypair` under `change.fence`. The stored tower is
    /// verified first; a bad one is an error and nothing changes.
    ///
    /// This is the last step of a takeover ([`Core::begin_takeover`]), which drivers use;
    /// calling it directly skips the checks before the acquire.
    pub fn set_identity(
        &mut self,
        now_ms: u64,
        change: IdentityChange,
    ) -> Result<Vec<Command>, CoreError> {
        self.switch_identity(now_ms, change)?;
        Ok(self.take_outbox())
    }

    /// [`Core::set_identity`], leaving its commands in the outbox.
    pub(super) fn switch_identity(
        &mut self,
        now_ms: u64,
        change: IdentityChange,
    ) -> Result<(), CoreError> {
        self.refuse_if_leaving()?;
        let id = change.keypair.pubkey();
        if change.fence.identity != id {
            return Err(CoreError::FenceMismatch {
                fence: change.fence.identity,
                keypair: id,
            });
        }
        let tower = self.tower_for(&change)?;
        let voter_key = self.voter_key_for(&change.keypair)?;
        let floor = self.takeover_floor(now_ms, change.tower.is_some(), tower.leader_claim());
        if let Some(r) = tower.root() {
            self.set_root(r);
        }
        // Our own last vote counts in fork choice even if it never landed (as in Solana);
        // otherwise a restarted voter can pick a fork it cannot switch to.
        if let Some(last) = tower.last_voted_slot() {
            let hash = crate::hash::Hash(tower.last_vote_hash());
            self.forks.observe_vote(self.cfg.vote_account, last, hash);
        }
        let vote_landed = !self.account_has_voted();
        self.identity = change.keypair;
        self.role = Role::Voting(Box::new(Voter {
            fence: change.fence,
            tower,
            voter_key,
            since_ms: now_ms,
            store: StoreState::Idle,
            claim: None,
            floor,
            first_new_vote: None,
            vote_landed,
            outage_since_ms: None,
            finish_mark: None,
        }));
        self.announce(now_ms);
        // Store at once: it proves the lock works and starts the leader claim.
        self.issue_store(now_ms, None);
        Ok(())
    }

    /// The slot we lead only above after taking an identity.
    ///
    /// A leader claim comes only from a confirmed store, every store writes the tower
    /// with the claim it asks for, claims only rise, and the tower is loaded after the
    /// lock was acquired. So the loaded tower's claim is at least every claim an earlier
    /// holder can ever have confirmed (its later stores are fenced out by our acquire),
    /// whatever its clock said: leading only above it never leads a slot twice. "No
    /// stored tower" means no earlier holder ever had a claim (a new cluster leads from
    /// its first slots). A tower of format version 1 carries no claim; then we fall back
    /// to the old bound from our own clock, which assumes clocks within the skew.
    fn takeover_floor(&self, now_ms: u64, stored: bool, claim: Option<huione_tower::Slot>) -> u64 {
        let clock_floor =
            || self.genesis.slot_at(now_ms) + LEGACY_LEADER_FENCE_SLOTS + self.cfg.fence_skew_slots;
        if self.cfg.planted(PlantedBug::FloorFromClock) {
            return if stored {
                self.genesis.slot_at(now_ms)
                    + self.cfg.leader_fence_slots
                    + self.cfg.fence_skew_slots
            } else {
                0
            };
        }
        match (stored, claim) {
            (false, _) => 0,
            (true, Some(c)) => c,
            (true, None) => clock_floor(),
        }
    }

    /// set-identity and can_vote_as are refused once the core is leaving.
    fn refuse_if_leaving(&self) -> Result<(), CoreError> {
        match &self.role {
            Role::Halted(r) => Err(CoreError::Halted(r.clone())),
            Role::SteppingDown(s) => Err(CoreError::Halted(s.reason.clone())),
            _ => Ok(()),
        }
    }

    fn tower_for(&self, change: &IdentityChange) -> Result<Tower, CoreError> {
        let id = change.keypair.pubkey();
        if self.cfg.planted(PlantedBug::IgnoreStoredTower) {
            return Ok(Tower::new(id));
        }
        match &change.tower {
            // Checked by the scheme that signs our towers (ed25519 outside the simulator).
            Some(saved) => Ok(saved.verify_with(&id, |k, m, s| self.verifier.verify(k, m, s))?),
            // Every vote is stored before it is sent, so "no stored tower" means this
            // identity never sent a vote: an empty tower is safe.
            None => Ok(Tower::new(id)),
        }
    }

    /// Adds a key that may sign votes. It is used from the next identity change (a
    /// running voter keeps the key it started with).
    pub fn add_authorized_voter(&mut self, keypair: Keypair) {
        if !self
            .cfg
            .authorized_voters
            .iter()
            .any(|k| k.pubkey() == keypair.pubkey())
        {
            self.cfg.authorized_voters.push(keypair);
        }
    }

    /// Forgets every authorized voter key except the node's current identity. Like
    /// [`Core::add_authorized_voter`], it applies from the next identity change.
    pub fn remove_authorized_voters(&mut self) {
        let id = self.identity.pubkey();
        self.cfg.authorized_voters.retain(|k| k.pubkey() == id);
    }

    /// Checks, without changing anything, that this core could vote as `identity` (its
    /// vote account names it and a key for the account's authorized voter is present).
    /// Drivers call it before acquiring the lock, so a set-identity that would fail does
    /// not take the lock away from a working primary.
    pub fn can_vote_as(&self, identity: &Keypair) -> Result<(), CoreError> {
        self.refuse_if_leaving()?;
        self.voter_key_for(identity).map(|_| ())
    }

    /// Public keys that may currently sign votes.
    pub fn authorized_voters(&self) -> Vec<huione_keys::Pubkey> {
        self.cfg
            .authorized_voters
            .iter()
            .map(|k| k.pubkey())
            .collect()
    }

    fn voter_key_for(&self, identity: &Keypair) -> Result<Keypair, CoreError> {
        let vote_account = self.cfg.vote_account;
        let account = self
            .forks
            .root_bank()
            .account(&vote_account)
            .ok_or(CoreError::UnknownVoteAccount(vote_account))?;
        if account.node != identity.pubkey() {
            return Err(CoreError::NotThisNodesAccount {
                vote_account,
                node: account.node,
                identity: identity.pubkey(),
            });
        }
        self.cfg
            .authorized_voters
            .iter()
            .find(|k| k.pubkey() == account.authorized_voter)
            .cloned()
            .ok_or(CoreError::NoAuthorizedVoter(account.authorized_voter))
    }

    /// Whether our vote account has any vote on the best fork. A fresh account (new
    /// cluster) may lead at once; otherwise we wait for one of our new votes to land.
    fn account_has_voted(&self) -> bool {
        let best = self.best_slot();
        let bank = self.forks.bank(best).expect("best slot is in the tree");
        bank.account(&self.cfg.vote_account)
            .is_some_and(|a| a.lockouts.last_voted_slot().is_some() || a.lockouts.root().is_some())
    }

    fn announce(&mut self, now_ms: u64) {
        let Role::Voting(v) = &self.role else { return };
        let a = InstanceAnnouncement::sign_with(
            self.verifier.as_ref(),
            &self.identity,
            self.cfg.instance_id.clone(),
            v.fence.revision,
            v.since_ms,
        );
        self.last_announce_ms = now_ms;
        self.outbox.push(Command::Announce(a));
    }

    pub(super) fn maybe_announce(&mut self, now_ms: u64) {
        if now_ms >= self.last_announce_ms + self.cfg.announce_interval_ms {
            self.announce(now_ms);
        }
    }

    /// Another instance announced itself. If it runs our identity and is newer, we exit.
    ///
    /// While our own acquire of this identity may have been applied (a `set-identity` of
    /// the identity this node already runs, racing another machine's), the rival's
    /// revision cannot be compared yet: ours is about to change. The announcement is kept
    /// and judged once that takeover has ended, against the lock we then hold; stepping
    /// down now would leave the lock with an instance that is exiting, and nobody voting.
    pub fn on_announcement(&mut self, now_ms: u64, a: InstanceAnnouncement) -> Vec<Command> {
        if !matches!(self.role, Role::Voting(_))
            || a.identity != self.identity.pubkey()
            || a.instance_id == self.cfg.instance_id
        {
            return Vec::new();
        }
        if a.instance_id.len() > MAX_INSTANCE_ID_LEN
            || !self
                .verifier
                .verify(&a.identity, &a.message(), &a.signature)
        {
            self.stats.announcements_dropped += 1;
            return Vec::new();
        }
        if self.acquire_unsettled(&a.identity) {
            if self.rival.as_ref().is_none_or(|r| a.rank() > r.rank()) {
                self.rival = Some(a);
            }
        } else {
            self.judge_rival(now_ms, a);
        }
        self.take_outbox()
    }

    /// Called from `tick`: judges a rival heard during a takeover that has since ended.
    pub(super) fn settle_rival(&mut self, now_ms: u64) {
        if self.takeover.is_none() {
            if let Some(a) = self.rival.take() {
                self.judge_rival(now_ms, a);
            }
        }
    }

    /// Steps down if `a` outranks the lock we vote under, or makes sure it hears of us.
    fn judge_rival(&mut self, now_ms: u64, a: InstanceAnnouncement) {
        let Role::Voting(v) = &self.role else { return };
        if a.identity != self.identity.pubkey() {
            return;
        }
        let ours = (v.fence.revision, v.since_ms, self.cfg.instance_id.as_str());
        if a.rank() > ours {
            self.step_down(
                now_ms,
                super::ExitReason::DuplicateInstance {
                    identity: a.identity,
                    other: a.instance_id,
                },
            );
        } else {
            // Make sure the older one hears about us soon.
            self.announce(now_ms);
        }
    }
}
