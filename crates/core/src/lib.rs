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
//! set-identity ─▶ driver: acquire lock (lease) ─▶ load stored tower
//!              ─▶ Core::set_identity(keypair, tower, fence) ─▶ verify tower
//!              ─▶ StoreTower (proves the lock) ─▶ votes as the new identity
//! ```
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
//! 3. **Fenced block production.** A node leads slot `s` only if a store it issued in
//!    slot `i ≥ s - F` was confirmed under its current fence, and `s` is above the floor
//!    `slot(t_take) + F + skew` fixed when it took the identity. Any store of an older
//!    holder that can be confirmed was written before the new holder's acquire, hence
//!    issued at or before `t_take`, so the old holder's slots are `≤ slot(t_take) + F`
//!    and the new holder's are above it: no slot is led by two instances, across
//!    failover, freezes and restarts (which also forget what was produced). Skew covers
//!    clock differences between machines. When the tower loaded after the acquire is
//!    absent, no holder ever had a confirmed store, hence no claim, and the floor is 0 (a
//!    new cluster leads from its first slots). After an identity change the node also
//!    waits for one of its new votes to land before leading.
//! 4. **Verified towers.** A tower handed to `set_identity` is verified (signature and
//!    identity) first; a bad one is an error, never replaced by an empty tower. A
//!    missing one means the identity never sent a vote (by 1.), so an empty tower is safe.
//! 5. **Duplicate instances.** Instances announce (identity, instance id, lock revision,
//!    start); the one with the lower revision (then earlier start) exits. Fencing stops
//!    the old one at its next store anyway; the announcement is a second, independent
//!    stop.
//! 6. **Bad input never panics.** Bad blocks, votes, signatures and announcements are
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
pub use validator::{
    Command, Core, CoreConfig, CoreError, ExitReason, IdentityChange, InstanceAnnouncement, Ledger,
    PeerId, PlantedBug, PlantedBugsNotBuilt, Stats, Status, MAX_ROOTED_BLOCKS, PLANTED_BUGS_BUILT,
};
