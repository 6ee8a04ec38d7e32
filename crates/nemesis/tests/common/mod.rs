//! Shared by the nemesis tests.

use std::path::PathBuf;
use std::process::Command;

/// Builds the binaries the campaign runs (they sit next to huione-nemesis).
pub fn build_tools() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Without the variables cargo sets for this test: the inner build would otherwise
    // see another CARGO_MANIFEST_DIR and rebuild ring and everything above it.
    let out = huione_testkit::without_cargo_test_env(&mut Command::new(cargo))
        .args([
            "build",
            "-q",
            "-p",
            "huione-validator",
            "-p",
            "huione-watchtower",
        ])
        .args(["-p", "huione-cli"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(env!("CARGO_BIN_EXE_huione-nemesis"))
        .parent()
        .unwrap()
        .to_path_buf()
}
