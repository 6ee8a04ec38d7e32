//! Shared helpers: run the launcher with its output in a file, wait for cluster.json
//! states, and check that processes are gone.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use huione_cluster::manifest::{ClusterManifest, ClusterState};

pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_huione-local-cluster");

/// The fake validator (a Python script) shipped with the tests.
pub fn fake_validator() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_validator.py")
}

pub struct Launcher {
    pub child: Child,
    pub dir: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Launcher {
    /// Starts the launcher with `args` plus `--dir <work>/cluster`; output goes to files in
    /// `work` (a pipe nobody reads would block it).
    pub fn start(work: &Path, args: &[&str], env: &[(&str, &str)]) -> Launcher {
        let dir = work.join("cluster");
        let stdout = work.join("launcher.out");
        let stderr = work.join("launcher.err");
        let child = Command::new(LAUNCHER)
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Launcher {
            child,
            dir,
            stdout,
            stderr,
        }
    }

    pub fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits until cluster.json says `state` (panics with the launcher's output if it exits
    /// first or `timeout` passes).
    pub fn wait_for_state(&mut self, state: ClusterState, timeout: Duration) -> ClusterManifest {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(m) = ClusterManifest::read(&self.dir) {
                if m.state == state {
                    return m;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "launcher exited ({status}) before {state:?}\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {state:?} after {timeout:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Waits for the launcher to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "launcher still running after {timeout:?}\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            let _ = self.wait(Duration::from_secs(30));
        }
    }
}

/// The process `pid` no longer runs (gone, or a zombie awaiting its reaper).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Waits until every pid is gone; panics naming the survivors.
pub fn assert_all_gone(pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| !process_gone(*p)).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still running after {timeout:?}: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every node's and etcd member's pid in the manifest.
pub fn all_pids(m: &ClusterManifest) -> Vec<u32> {
    let mut pids: Vec<u32> = m.nodes.iter().filter_map(|n| n.pid).collect();
    if let Some(e) = &m.etcd {
        pids.extend(e.pids.iter().flatten());
    }
    pids
}
