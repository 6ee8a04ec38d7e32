//! The types that make "store the tower, then send the vote" and fenced block
//! production hard to get wrong.
//!
//! * The core never hands a vote to the driver directly. When it decides to vote it
//!   records the vote in its tower and emits `Command::StoreTower(StoreTicket)`. The
//!   ticket is not `Clone` and can only be made by the core; the driver stores
//!   [`StoreTicket::tower`] under the lease whose revision is [`StoreTicket::fence`],
//!   then consumes the ticket into a [`StoreReport`] with [`StoreTicket::confirmed`] or
//!   [`StoreTicket::failed`]. `confirmed` takes the [`StoreReceipt`] that storage
//!   returns from a successful fenced write, which only `huione-tower-storage` can make
//!   (private constructor), and checks it: made under this ticket's fence (identity and
//!   lock revision) for these exact tower bytes (SHA-256). A receipt that does not match
//!   gives a failed report ([`StoreFailure::BadReceipt`]), never a confirmed one: the
//!   vote stays withheld and the store is retried.
//! * Only the core, on a confirmed report for its current fence and the store in
//!   flight, turns the withheld vote into an [`OutgoingVote`], the only payload of
//!   `Command::SendVote`. `OutgoingVote` has no public constructor.
//! * A confirmed report also extends the *leader claim*: a store issued during slot `s`
//!   writes the claim `s + F` (`leader_fence_slots`) into the stored tower, and once
//!   confirmed lets the node produce blocks up to that slot. A node that takes an
//!   identity (startup, restart or set-identity) produces only slots above the claim of
//!   the tower it loads after acquiring the lock. Every store the previous holder can
//!   still have confirmed was written before that acquire, and claims only rise, so the
//!   two ranges never overlap, whatever the machines' clocks say (see the crate docs).

use huione_keys::Pubkey;
use huione_tower::{SavedTower, Slot};
use huione_tower_storage::StoreReceipt;
use serde::{Deserialize, Serialize};

use crate::block::SignedVote;

/// The storage lock an instance votes under: the identity and the revision at which the
/// lock was acquired (the fencing token). The driver builds it from its storage lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    pub identity: Pubkey,
    pub revision: i64,
}

/// A request to store a tower durably under a fence. Made only by the core.
#[derive(Debug)]
#[must_use = "a store ticket must be executed and reported back, or the vote is withheld forever"]
pub struct StoreTicket {
    seq: u64,
    fence: Fence,
    tower: SavedTower,
    issued_slot: Slot,
    claim: Option<Slot>,
}

impl StoreTicket {
    pub(crate) fn new(
        seq: u64,
        fence: Fence,
        tower: SavedTower,
        issued_slot: Slot,
        claim: Option<Slot>,
    ) -> Self {
        StoreTicket {
            seq,
            fence,
            tower,
            issued_slot,
            claim,
        }
    }
    /// The lock the store must be fenced by (compare its revision inside the write).
    pub fn fence(&self) -> Fence {
        self.fence
    }
    /// The signed tower to write.
    pub fn tower(&self) -> &SavedTower {
        &self.tower
    }
    /// The slot during which the core asked for this store.
    pub fn issued_slot(&self) -> Slot {
        self.issued_slot
    }
    /// The leader claim written in [`Self::tower`]: once confirmed, the node may lead
    /// up to this slot.
    pub fn claim(&self) -> Option<Slot> {
        self.claim
    }
    /// Report that storage durably wrote [`Self::tower`] under [`Self::fence`]: `receipt`
    /// is what the storage's `store` returned. A receipt for another identity, lock
    /// revision or other bytes makes a failed report ([`StoreFailure::BadReceipt`]),
    /// never a confirmed one.
    pub fn confirmed(self, receipt: StoreReceipt) -> StoreReport {
        match receipt.covers(&self.fence.identity, self.fence.revision, &self.tower) {
            Ok(()) => self.report(Ok(receipt.revision())),
            Err(mismatch) => self.report(Err(StoreFailure::BadReceipt(mismatch.to_string()))),
        }
    }
    /// Report that the write did not happen.
    pub fn failed(self, failure: StoreFailure) -> StoreReport {
        self.report(Err(failure))
    }
    fn report(self, outcome: Result<i64, StoreFailure>) -> StoreReport {
        StoreReport {
            seq: self.seq,
            fence: self.fence,
            claim: self.claim,
            outcome,
        }
    }
}

/// Why a store did not happen, split by what the core must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreFailure {
    /// Transient (unreachable, timeout): the vote stays withheld and the store is retried.
    Unavailable(String),
    /// Someone else holds the lock: stop voting now and exit.
    LockLost(String),
    /// The driver confirmed with a receipt for another store (another fence or other
    /// bytes): a driver bug. The vote stays withheld and the store is retried, as for
    /// `Unavailable`; the driver must log it loudly.
    BadReceipt(String),
}

/// The outcome of a [`StoreTicket`], fed back with `Event::StoreReport`.
#[derive(Debug)]
pub struct StoreReport {
    pub(crate) seq: u64,
    pub(crate) fence: Fence,
    pub(crate) claim: Option<Slot>,
    pub(crate) outcome: Result<i64, StoreFailure>,
}

impl StoreReport {
    pub fn is_confirmed(&self) -> bool {
        self.outcome.is_ok()
    }
    /// Why the store did not happen, for a failed report.
    pub fn failure(&self) -> Option<&StoreFailure> {
        self.outcome.as_ref().err()
    }
}

/// A vote whose tower is durably stored under a lock the core still held when the
/// confirmation arrived. The only thing `Command::SendVote` carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingVote(SignedVote);

impl OutgoingVote {
    pub(crate) fn new(vote: SignedVote) -> Self {
        OutgoingVote(vote)
    }
    pub fn vote(&self) -> &SignedVote {
        &self.0
    }
    pub fn into_vote(self) -> SignedVote {
        self.0
    }
}
