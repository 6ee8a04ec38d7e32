//! An existing Solana client library (solana-py) reads a live huione node's RPC.
//! The venv is shared with huione-rpc's check (`target/solana-py-venv`) and created on
//! first use; if it cannot be installed the test fails, naming what to install.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const PIP_PACKAGES: &[&str] = &["solana==0.41.0", "solders==0.29.0"];

fn venv_python() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let venv = target.join("solana-py-venv");
    let python = venv.join("bin/python");
    let marker = venv.join(format!(".installed-{}", PIP_PACKAGES.join("-")));
    if marker.exists() && python.exists() {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "cannot create a Python venv (on Debian: apt-get install python3-venv)"
    );
    let ok = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PIP_PACKAGES)
        .status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "pip install solana-py failed (needs PyPI)"
    );
    std::fs::write(&marker, b"ok\n").unwrap();
    python
}

#[test]
fn solana_py_reads_a_live_node() {
    let python = venv_python();
    let mut c = Cluster::new(BIN, 3, 100);
    c.start_all();
    let ok = wait_for(Duration::from_secs(40), || {
        (c.nodes[0].slot("finalized")? >= 20).then_some(())
    });
    assert!(ok.is_some(), "cluster did not root:\n{}", c.logs());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/solana_client_live.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}", c.nodes[0].rpc_port))
        .arg(c.keys[0].0.pubkey().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "solana-py could not read the node:\n{stdout}"
    );
    assert!(stdout.contains("all solana-py checks passed"));
}
