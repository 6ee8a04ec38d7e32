//! Vote accounts and the per-slot bank that holds them.
//!
//! A [`Bank`] is the state after replaying one block: a copy of its parent's vote
//! accounts with the block's votes applied. Applying a vote follows Solana's vote
//! program: the vote must be signed by the account's authorized voter, must be for a
//! block on this fork (an ancestor, with the same hash), must be newer than the
//! account's last vote; it then goes through the lockout rules, and every slot it roots
//! earns the account one credit.

use std::collections::BTreeMap;
use std::sync::Arc;

use huione_keys::Pubkey;
use huione_tower::{Slot, Tower, VoteOutcome};

use crate::block::{SigVerifier, SignedVote};
use crate::genesis::Genesis;
use crate::hash::Hash;

/// One vote account's on-chain state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteAccount {
    /// The node identity this account votes for (the leader schedule's identity).
    pub node: Pubkey,
    pub authorized_voter: Pubkey,
    pub stake: u64,
    /// The account's lockouts and root, kept by the same rules as a validator's tower.
    pub lockouts: Tower,
    pub credits: u64,
}

/// Why a vote carried in a block was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VoteRejected {
    #[error("no such vote account")]
    UnknownAccount,
    #[error("not signed by the account's authorized voter")]
    WrongVoter,
    #[error("signature does not verify")]
    BadSignature,
    #[error("voted block is not an ancestor on this fork")]
    NotOnFork,
    #[error("not newer than the account's last vote")]
    Stale,
}

/// The vote accounts after replaying the block at `slot`.
#[derive(Clone, Debug)]
pub struct Bank {
    pub slot: Slot,
    pub hash: Hash,
    /// Shared with the parent until a vote changes an account (copy on write). Accounts
    /// hold no heap data (a tower's stack is inline): the copy is the map's nodes only.
    accounts: Arc<BTreeMap<Pubkey, VoteAccount>>,
}

impl Bank {
    /// The bank of slot 0, from genesis.
    pub fn genesis(genesis: &Genesis) -> Self {
        let accounts = genesis
            .validators
            .iter()
            .map(|v| {
                let account = VoteAccount {
                    node: v.identity,
                    authorized_voter: v.authorized_voter,
                    stake: v.stake,
                    lockouts: Tower::new(v.identity),
                    credits: 0,
                };
                (v.vote_account, account)
            })
            .collect();
        Bank {
            slot: 0,
            hash: genesis.hash,
            accounts: Arc::new(accounts),
        }
    }

    /// A bank from saved parts (a ledger snapshot of a rooted bank).
    pub fn from_accounts(
        slot: Slot,
        hash: Hash,
        accounts: impl IntoIterator<Item = (Pubkey, VoteAccount)>,
    ) -> Self {
        Bank {
            slot,
            hash,
            accounts: Arc::new(accounts.into_iter().collect()),
        }
    }

    /// A child bank for the block (`slot`, `hash`), before its votes are applied.
    pub fn child(&self, slot: Slot, hash: Hash) -> Self {
        Bank {
            slot,
            hash,
            accounts: Arc::clone(&self.accounts),
        }
    }

    pub fn account(&self, vote_account: &Pubkey) -> Option<&VoteAccount> {
        self.accounts.get(vote_account)
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&Pubkey, &VoteAccount)> {
        self.accounts.iter()
    }

    /// Applies one vote. `fork_hash(s)` is the hash of the ancestor at slot `s` on this
    /// bank's fork (None if `s` is not an ancestor). Returns the slots newly rooted.
    pub fn apply_vote(
        &mut self,
        vote: &SignedVote,
        verifier: &dyn SigVerifier,
        fork_hash: impl Fn(Slot) -> Option<Hash>,
    ) -> Result<Option<Slot>, VoteRejected> {
        let account = self
            .accounts
            .get(&vote.vote_account)
            .ok_or(VoteRejected::UnknownAccount)?;
        if account.authorized_voter != vote.voter {
            return Err(VoteRejected::WrongVoter);
        }
        if vote.slot >= self.slot || fork_hash(vote.slot) != Some(vote.hash) {
            return Err(VoteRejected::NotOnFork);
        }
        if account
            .lockouts
            .last_voted_slot()
            .is_some_and(|l| vote.slot <= l)
            || account.lockouts.root().is_some_and(|r| vote.slot <= r)
        {
            return Err(VoteRejected::Stale);
        }
        // Signature last: it is the expensive check.
        if !vote.check_signature(verifier) {
            return Err(VoteRejected::BadSignature);
        }
        let account = Arc::make_mut(&mut self.accounts)
            .get_mut(&vote.vote_account)
            .expect("checked above");
        match account
            .lockouts
            .record_vote(vote.slot, vote.hash.0, vote.timestamp_ms)
        {
            VoteOutcome::Recorded { new_root } => {
                if new_root.is_some() {
                    account.credits += 1;
                }
                Ok(new_root)
            }
            VoteOutcome::Ignored => Err(VoteRejected::Stale),
        }
    }
}
