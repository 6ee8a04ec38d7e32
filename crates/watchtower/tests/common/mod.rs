//! Test harness: real huione-validator processes on loopback, in a temp dir
//! (`huione_testkit::nodes`), run from the binary [`validator_bin`] builds or finds.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub use huione_testkit::nodes::*;

/// The `huione-validator` binary: `$HUIONE_VALIDATOR_BIN`, else built (once per test
/// process) with the cargo that runs the tests, so it is never stale.
pub fn validator_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HUIONE_VALIDATOR_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "huione-validator",
                "--bin",
                "huione-validator",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build -p huione-validator failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let exe = std::env::current_exe().expect("current exe");
        // The test binary lives in target/<profile>/deps/.
        exe.parent()
            .and_then(Path::parent)
            .map(|d| d.join("huione-validator"))
            .expect("target dir")
    })
    .clone()
}
