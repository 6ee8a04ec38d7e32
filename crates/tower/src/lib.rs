//! The tower: a validator's Tower BFT vote record, and its signed saved form.
//!
//! This crate has no I/O. [`Tower`] holds the vote stack with lockouts exactly as
//! Solana's vote program keeps it; [`SavedTower`] is the signed byte form that tower
//! storage keeps, verified on load.

mod lockout;
mod saved;

pub use lockout::{Lockout, Slot, Tower, VoteOutcome, MAX_LOCKOUT_HISTORY, VOTE_THRESHOLD_DEPTH};
pub use saved::{SavedTower, TowerError, OLDEST_READ_VERSION, SAVED_TOWER_VERSION};
