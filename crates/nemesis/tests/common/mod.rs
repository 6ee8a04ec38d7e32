//! Shared by the nemesis tests.

use std::path::PathBuf;

/// Builds the binaries the campaign runs (they sit next to huione-nemesis).
pub fn build_tools() -> PathBuf {
    let args = [
        "-q",
        "-p",
        "huione-validator",
        "-p",
        "huione-watchtower",
        "-p",
        "huione-cli",
    ];
    huione_testkit::cargo_build(env!("CARGO_MANIFEST_DIR"), &args)
        .unwrap_or_else(|e| panic!("{e}"));
    PathBuf::from(env!("CARGO_BIN_EXE_huione-nemesis"))
        .parent()
        .unwrap()
        .to_path_buf()
}
