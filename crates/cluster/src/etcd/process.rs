//! Process plumbing for the etcd launcher: finding binaries, signals, log tails.

use anyhow::bail;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Finds `name` via the env var `env` or PATH; the error says which Debian package to install.
pub fn find_binary(env: &str, name: &str, package: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "{env}={} is not a file: point it at the {name} binary",
            path.display()
        );
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    });
    match found {
        Some(path) => Ok(path),
        None => bail!(
            "`{name}` not found on PATH: install it with `apt-get install {package}` \
             (or set {env} to its path)"
        ),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `program` to run in network namespace `netns` (`ip netns exec NAME program`: `ip`
/// execs the program without forking, so the child's pid is the program's), or here.
pub fn command_in_netns(netns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Sends `sig` to `pid` (errors ignored: the process may be gone).
pub fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Makes the child run in its own process group (so a terminal's Ctrl-C, which signals the
/// foreground group, reaches only the parent, which then stops its children in order) and
/// get SIGTERM when the parent dies, so that a killed parent leaves no orphans. Linux only
/// for the second part. Spawn from a long-lived thread: the death signal follows the thread
/// that forked.
pub fn detach_from_terminal_and_die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid is async-signal-safe; captured before fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (setpgid, prctl, getppid), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl: then nobody would signal us.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("parent exited during spawn"));
                }
            }
            let _ = parent;
            Ok(())
        });
    }
}

/// The last `lines` lines of the file at `path` ("" if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    last_lines(&text, lines)
}

/// The last `lines` lines of `text`.
pub fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The log at `path` reports a port that could not be bound.
/// Only the part after byte `from` is read (the current run's messages).
pub fn mentions_port_in_use(path: &Path, from: u64) -> bool {
    let from = usize::try_from(from).unwrap_or(usize::MAX);
    std::fs::read(path)
        .map(|b| {
            let run = b.get(from..).unwrap_or_default();
            String::from_utf8_lossy(run).contains("address already in use")
        })
        .unwrap_or(false)
}

/// Writes `content` to `path` with `mode` (replacing it).
pub fn write_file(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    file.write_all(content)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Removes from `cmd`'s environment the variables cargo sets for the test that runs it
/// (`CARGO_PKG_*`, `CARGO_MANIFEST_DIR`, `LD_LIBRARY_PATH`, ...), so that a `cargo build`
/// the test starts (directly or through a script) runs as from a shell. Otherwise the inner
/// cargo takes them for changed inputs of build scripts that track them (ring's tracks
/// `CARGO_MANIFEST_DIR`) and rebuilds those crates and everything above them, and the next
/// `cargo test` rebuilds them back.
pub fn without_cargo_test_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    const PREFIXES: [&str; 4] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BIN_EXE_",
        "CARGO_CRATE_",
    ];
    const NAMES: [&str; 4] = [
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "LD_LIBRARY_PATH",
        "RUST_RECURSION_COUNT",
    ];
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if PREFIXES.iter().any(|p| k.starts_with(p)) || NAMES.contains(&k.as_ref()) {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}

/// `cargo build ARGS` in `dir` with the cargo that runs the current test (`$CARGO`, else
/// `cargo`) and without the test's variables ([`without_cargo_test_env`]); a no-op when
/// the binaries are fresh. The error carries cargo's stderr.
pub fn cargo_build(dir: &str, args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = without_cargo_test_env(&mut std::process::Command::new(cargo))
        .arg("build")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "cargo build {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_error_says_what_to_install() {
        let err = find_binary(
            "HUIONE_TESTKIT_UNSET_VAR_FOR_TEST",
            "huione-no-such-binary",
            "etcd-server",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("apt-get install etcd-server"), "{err}");
        assert!(err.contains("huione-no-such-binary"), "{err}");
    }

    #[test]
    fn port_in_use_is_searched_only_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("m0.log");
        std::fs::write(&log, "listen tcp: bind: address already in use\nstarted\n").unwrap();
        assert!(mentions_port_in_use(&log, 0));
        assert!(!mentions_port_in_use(&log, 30));
        assert!(!mentions_port_in_use(&dir.path().join("none.log"), 0));
        assert_eq!(tail(&log, 1), "started");
    }
}
