//! huione-core: one validator's consensus logic, with no I/O.
//!
//! No sockets, no clock, no randomness, no threads: every method takes the events and
//! `now_ms`, and returns [`Command`]s for the driver to execute in order (the shape of
//! raft-rs's `step`/`Ready` and quinn-proto). The validator daemon and the simulator
//! (`huione-sim`) are both drivers of [`Core`].
//!
//! # Data flow
//!
//! ```text
//! block arrives ─▶ Core::on_block ─▶ check leader (schedule) + signature + hash
//!                 ─▶ replay on parent's bank (vote program: lockouts, roots, credits)
//!                 ─▶ fork tree ─▶ heaviest-subtree fork choice ─▶ best slot
//!                 ─▶ tower: lockout, threshold (depth 8, 2/3), switch (38%)
//!                 ─▶ record vote in tower ─▶ Command::StoreTower(ticket)   [vote withheld]
//! driver stores under its lease ─▶ ticket.confirmed(rev) ─▶ Core::on_store_report
//!                 ─▶ Command::SendVote(OutgoingVote)                       [vote released]
//!                 (transient failure: withheld, retried; LockLost: Command::Exit)
//!
//! set-identity ─▶ Core::begin_takeover ─▶ Command::Storage: load, verify ─▶ acquire
//!              ─▶ load after the acquire, verify ─▶ switch (Command::Takeover(Switched))
//!              ─▶ StoreTower (proves the lock) ─▶ votes as the new identity
//!              ─▶ first confirmed store ─▶ "finished" in the lock history
//! ```
//!
//! Every takeover (start-up, set-identity, failover, a restarted primary's reclaim) is
//! that one sequence, in [`Core::begin_takeover`]'s module; drivers run its storage calls
//! and hand the answers back with [`Core::on_storage_answer`].
//!
//! # Invariants this crate keeps
//!
//! 1. **Store before send.** A `SendVote` carries an [`OutgoingVote`], which only the
//!    core makes, and only when the driver hands back a confirmed [`StoreReport`] for
//!    the store in flight under the current fence. One store is in flight at a time and
//!    a vote is decided only when none is, so the confirmed tower contains the vote.
//!    A `StoreReport` can only be made by consuming the (non-`Clone`) [`StoreTicket`].
//! 2. **Lost lock = stop now.** A `LockLost` report halts the core before anything else
//!    is emitted: no vote, no block, then `Exit`. A halted core ignores every event.
//! 3. **Fenced block production, independent of clocks.** Every store writes a *leader
//!    claim* into the tower it stores: `slot(issue) + F` (F = 1), never lower than the
//!    tower's previous claim. A node leads slot `s` only if a store whose claim is `≥ s`
//!    was confirmed under its current fence, and `s` is above its floor: the claim of the
//!    tower it loaded right after acquiring the lock. Why no slot is led twice: every
//!    store an older holder can still have confirmed committed before the new holder's
//!    acquire (later ones are fenced out by the revision), claims only rise, and the load
//!    is linearizable, so the loaded claim is at least every claim an older holder can
//!    ever lead with — whatever its clock said when it computed it. This is what broke
//!    before: the floor was `slot(now) + F + skew` by the *taker's* clock, and a primary
//!    whose clock ran two slots ahead had claimed further than that. A tower without a
//!    claim (format version 1) falls back to that clock floor; no stored tower means no
//!    holder ever had a claim, and the floor is 0.
//!    Liveness around it: a node that loses the lock (or hears of a newer instance)
//!    *steps down*: it votes no more but produces the slots its confirmed claim still
//!    covers, then exits, so a planned handover inside a leader window skips no slot
//!    (the taker starts right above). Leaders put their own sent votes in their blocks.
//!    After an identity change a node waits for one of its new votes to land before
//!    leading, unless the block it is about to produce carries one and every slot since
//!    its parent is its own (nobody else could carry it). A tick gap of over two slots
//!    (a paused process) drops the confirmed claim until a new store confirms, which
//!    also finds a lost lock before anything is produced. The node estimates its clock
//!    offset from other leaders' broadcast blocks (per leader the smallest
//!    arrival-minus-schedule difference, then the lower median by size) and neither
//!    leads nor raises its claim while it is beyond `max_clock_offset_ms` (one slot).
//! 4. **Verified towers.** A tower handed to `set_identity` is verified (signature and
//!    identity) first; a bad one is an error, never replaced by an empty tower. A
//!    missing one means the identity never sent a vote (by 1.), so an empty tower is safe.
//! 5. **Duplicate instances.** Instances announce (identity, instance id, lock revision,
//!    start); the one with the lower revision (then earlier start) exits. Fencing stops
//!    the old one at its next store anyway; the announcement is a second, independent
//!    stop.
//! 6. **No half-finished takeover.** Once an acquire may have been applied, the core
//!    alone carries the takeover to one of two ends: it votes under that lock, or it gave
//!    the lock up with a fenced release. An acquire whose answer was lost is resolved from
//!    the lock key (our own record, recognised by instance id and the acquire's tag, is
//!    adopted; anything else is settled by acquiring again, after which no earlier attempt
//!    can apply: etcd guards each attempt on the lock key's revision as seen); a load,
//!    verification or switch failing after the acquire releases the lock (loads are
//!    retried for `takeover_finish_ms` first). Why this is safe, not only live: a release
//!    is compared on our own lease like a store, so it can never undo a newer holder's
//!    acquire; an adopted record is still compared inside storage on every store; and
//!    while a takeover runs, a lost-lock report for the identity being re-taken is
//!    treated as transient (the lock was moved by this very process), so nothing is
//!    voted under it. One takeover at a time: a second is refused, so no check that fails
//!    before a new acquire can abandon a lock the first one took.
//! 7. **Bad input never panics.** Bad blocks, votes, signatures and announcements are
//!    dropped and counted in [`Stats`]; every queue and cache has a bound.
//!
//! The [`audit`] module checks invariants 3 and 4 of PRODUCT.md (no double votes or
//! lockout violations, no duplicate blocks) from logged records, for the simulator and
//! for real ledgers.

pub mod audit;
mod bank;
mod block;
mod fence;
mod forks;
mod genesis;
mod hash;
mod validator;

pub use bank::{Bank, VoteAccount, VoteRejected};
pub use block::{Block, BlockError, Ed25519Verifier, SigVerifier, SignedVote, MAX_VOTES_PER_BLOCK};
pub use fence::{Fence, OutgoingVote, StoreFailure, StoreReport, StoreTicket};
pub use forks::{ForkTree, MAX_ROOTED_HISTORY};
pub use genesis::{
    Genesis, GenesisError, GenesisValidator, LeaderSchedule, ScheduleCache, SplitMix64,
    LEADER_SLOTS,
};
pub use hash::Hash;
pub use huione_tower::Slot;
/// What a successful fenced store returns; the only thing that confirms a [`StoreTicket`].
pub use huione_tower_storage::StoreReceipt;
pub use validator::{
    Command, Core, CoreConfig, CoreError, ExitReason, IdentityChange, InstanceAnnouncement, Ledger,
    LockAfterFailure, LockHolder, PeerId, PlantedBug, PlantedBugsNotBuilt, Stats, Status,
    StorageAnswer, StorageCall, StorageOp, StorageProblem, Switched, TakeoverError, TakeoverEvent,
    TakeoverReason, TakeoverRequest, VoteWithheld, WithheldRule, MAX_ROOTED_BLOCKS,
    PLANTED_BUGS_BUILT,
};
