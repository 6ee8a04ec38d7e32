//! What a run produced: its figures, or the failure with the seed that reproduces it.

use std::fmt;

use huione_core::audit::Violation;
use huione_core::Slot;

/// Figures of a finished run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    pub slots: Slot,
    pub root_at_heal: Slot,
    pub final_root: Slot,
    pub votes_audited: u64,
    pub blocks_audited: u64,
    pub violations: u64,
    pub faults_injected: u64,
    /// Failovers the watchtowers carried out (finished, whatever their result).
    pub watchtower_failovers: u64,
    /// Fault-free slots until the root advanced again.
    pub recovery_slots: Slot,
}

/// Which invariant broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// PRODUCT.md invariants 3/4, found by the auditor.
    Violation(Box<Violation>),
    /// PRODUCT.md invariant 1: a vote left without a store after it was decided.
    VoteBeforeStore(String),
    /// Roots did not advance once faults stopped.
    Liveness(String),
    /// A running process that reaches storage held an identity's lock without voting
    /// under it for longer than the bound (a takeover left half-finished).
    HalfFinishedTakeover(String),
}

/// A failed run. Its Display names the seed and the command that replays it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFailure {
    pub seed: u64,
    pub slot: Slot,
    pub kind: FailureKind,
    pub replay: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            FailureKind::Violation(v) => format!("safety violation: {v}"),
            FailureKind::VoteBeforeStore(d) => {
                format!("vote sent before its tower was stored: {d}")
            }
            FailureKind::Liveness(d) => format!("liveness: {d}"),
            FailureKind::HalfFinishedTakeover(d) => format!("half-finished takeover: {d}"),
        };
        write!(
            f,
            "simulation failed at slot {} with seed={}: {what}\n  replay: {}",
            self.slot, self.seed, self.replay
        )
    }
}

impl std::error::Error for SimFailure {}
