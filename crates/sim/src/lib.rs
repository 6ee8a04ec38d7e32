//! huione-sim: a deterministic simulator of a whole huione cluster in one process.
//!
//! Every validator is a `huione_core::Core`; the simulator is their driver. It owns
//! simulated time (ticks of a quarter slot), a network that delays, drops, reorders
//! and partitions messages, the shared in-memory etcd model (`MemoryTowerStorage`,
//! with revisions and fenced writes), and machines that crash (memory lost, ledger
//! kept, tower back from storage), freeze (paused, resume with a stale view), exit and
//! restart. Primary/standby pairs share a vote account and authorized voter; a standby
//! runs its own identity until set-identity; a restarted primary reclaims its identity
//! once caught up. Next to every standby runs the shipped watchtower's decision state
//! machine (`huione_watchtower::decision::Monitor`), fed every 100 ms (overlapping checks, judged in start order, as shipped) with what its probes
//! would read from the simulated world; its failovers run the simulated set-identity.
//!
//! # Data flow of one step
//!
//! ```text
//! queue (time, seq) ─▶ deliver: block/vote/announce/repair ─▶ Core::on_* ─▶ commands
//!                      store request reaches storage ─▶ store_now(lease, tower)
//!                          ─▶ ticket.confirmed / failed ─▶ (latency) ─▶ on_store_report
//! commands ─▶ StoreTower: queue a store │ SendVote: audit + broadcast │ BroadcastBlock:
//!             audit + broadcast │ Exit: process down, restart later
//! ```
//!
//! # Invariants checked
//!
//! After every vote and block the `huione_core::audit::Auditor` checks PRODUCT.md's
//! invariants 3 and 4 (no double vote, no lockout violation, no duplicate block); the
//! driver checks invariant 1 (a vote leaves only after a store by the same process
//! succeeded after the vote was decided). After the fault phase every fault is healed
//! and roots must advance again (liveness). Everything random comes from one seed, so
//! a failure prints `seed=…` and the `cargo run -p huione-sim` line that replays it.

mod config;
mod driver;
mod faults;
mod report;
mod rng;
mod verifier;
mod watchtower;
mod world;

pub use config::{bug_name, parse_bug, FaultRates, NetConfig, SimConfig};
pub use report::{FailureKind, SimFailure, SimReport};
pub use rng::Rng;
pub use verifier::CachedVerifier;
pub use watchtower::{
    FailoverRecord, SimWatchtower, CHECK_INTERVAL_MS, GOSSIP_PUSH_MS, GOSSIP_TTL_MS,
    RPC_TIMEOUT_MS, SET_IDENTITY_TIMEOUT_MS,
};
pub use world::{
    vote_account, Machine, MachineId, MachineKind, MachineState, MachineStats, SentVote, Sim,
    LIVENESS_ROOT_ADVANCE,
};

/// Seeds the randomized-rounds test runs (`tests/random_rounds.rs`).
pub const TEST_ROUNDS: u64 = 200;
/// Fault-phase slots per randomized test round (plus the liveness phase).
pub const TEST_ROUND_SLOTS: u64 = 60;

/// Runs one seeded round of [`SimConfig::random`].
pub fn run_seed(seed: u64, slots: u64) -> Result<SimReport, SimFailure> {
    Sim::new(SimConfig::random(seed, slots)).run()
}
