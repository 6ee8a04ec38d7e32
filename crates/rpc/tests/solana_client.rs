//! An existing Solana client library reads our RPC: runs `solana_client_check.py`
//! (solana-py + solders, from PyPI) against a server started here. The venv is installed
//! into `target/solana-py-venv` on first use; if that fails, this test FAILS (it never
//! skips), naming what to install.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use huione_rpc::RpcServerConfig;

/// Pinned so the check is reproducible; bump deliberately.
const PIP_PACKAGES: &[&str] = &["solana==0.41.0", "solders==0.29.0"];

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(dir)
        };
    }
    // The test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Returns the venv's python, creating the venv and installing solana-py if needed.
fn ensure_venv() -> Result<PathBuf, String> {
    let venv = target_dir().join("solana-py-venv");
    let python = venv.join("bin/python");
    let marker = venv.join(format!(".installed-{}", PIP_PACKAGES.join("-")));
    if marker.exists() && python.exists() {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "creating a Python venv (on Debian: apt-get install python3-venv)",
    )?;
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PIP_PACKAGES),
        "pip install solana-py (needs PyPI access)",
    )?;
    std::fs::write(&marker, b"ok\n").map_err(|e| format!("writing {}: {e}", marker.display()))?;
    Ok(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solana_py_reads_our_rpc() {
    let python = tokio::task::spawn_blocking(ensure_venv)
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!("cannot set up solana-py for the client compatibility check: {e}")
        });
    let t = start(RpcServerConfig::default()).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/solana_client_check.py");
    let url = format!("http://{}", t.addr);
    let identity = key(1).to_string();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&url)
        .arg(&identity)
        .output()
        .await
        .expect("run the check script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "solana-py could not read our RPC ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all solana-py checks passed"));
    assert!(t.metrics.rpc_requests.total() >= 10);
    t.server.shutdown().await;
}
