//! The validator's on-disk ledger (block segments, snapshots, the audit log), as a library
//! for the `huione-validator` and `huione-audit` binaries, the aging benchmark and tests.

pub mod ledger;
