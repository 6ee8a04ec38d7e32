//! Test harness: real huione-validator processes on loopback, in a temp dir
//! (`huione_testkit::nodes`), run from this crate's binary.
#![allow(dead_code)]

pub use huione_testkit::nodes::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_huione-validator");
