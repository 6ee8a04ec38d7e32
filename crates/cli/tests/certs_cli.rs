//! Integration tests of the `huione-certs` binary: files and modes, refusing to overwrite,
//! `show` output and errors, and the operator guide's check against a real etcd
//! (curl with the validator certificate gets 404; without it, it is refused).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use huione_testkit::free_port;

fn certs_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_huione-certs"))
}

fn run(args: &[&str]) -> Output {
    certs_bin()
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run huione-certs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const FILES: [&str; 6] = [
    "etcd-ca.pem",
    "etcd-ca-key.pem",
    "etcd.pem",
    "etcd-key.pem",
    "validator.pem",
    "validator-key.pem",
];

fn new_certs(dir: &Path, extra: &[&str]) -> Output {
    let dir = dir.to_str().unwrap();
    let mut args = vec!["new", "--dir", dir, "--hosts", "localhost,127.0.0.1"];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn new_writes_the_seed_file_names_with_private_keys_0600() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let out = new_certs(&dir, &["--members", "3"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let mut expected: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
    for i in 0..3 {
        expected.push(format!("etcd-member-{i}.pem"));
        expected.push(format!("etcd-member-{i}-key.pem"));
    }
    for name in &expected {
        let path = dir.join(name);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777;
        if name.ends_with("-key.pem") {
            assert_eq!(mode, 0o600, "{name}");
        } else {
            assert_eq!(mode, 0o644, "{name}");
        }
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), expected.len());
    let (stdout, _) = text(&out);
    assert!(stdout.contains("etcd-member-2-key.pem"), "{stdout}");
}

#[test]
fn new_refuses_to_overwrite_without_force_and_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(new_certs(dir, &[]).status.success());
    let before = std::fs::read(dir.join("etcd-ca.pem")).unwrap();

    let out = new_certs(dir, &[]);
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    assert!(stderr.contains("etcd-ca.pem"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("etcd-ca.pem")).unwrap(), before);

    // Only a member file in the way: still nothing written.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("etcd-member-1-key.pem"), "mine").unwrap();
    let out = new_certs(other.path(), &["--members", "2"]);
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    assert!(stderr.contains("etcd-member-1-key.pem"), "{stderr}");
    assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 1);

    let out = new_certs(dir, &["--force"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_ne!(std::fs::read(dir.join("etcd-ca.pem")).unwrap(), before);
}

#[test]
fn reuse_ca_keeps_the_ca_and_replaces_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(new_certs(dir, &[]).status.success());
    let ca = std::fs::read(dir.join("etcd-ca.pem")).unwrap();
    let etcd = std::fs::read(dir.join("etcd.pem")).unwrap();

    let out = new_certs(dir, &["--reuse-ca"]);
    assert!(!out.status.success(), "leaves exist: needs --force");
    assert!(text(&out).1.contains("etcd.pem"), "{:?}", text(&out));

    let out = new_certs(dir, &["--reuse-ca", "--force"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(std::fs::read(dir.join("etcd-ca.pem")).unwrap(), ca);
    assert_ne!(std::fs::read(dir.join("etcd.pem")).unwrap(), etcd);

    let empty = tempfile::tempdir().unwrap();
    let out = new_certs(empty.path(), &["--reuse-ca"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("etcd-ca.pem"), "{:?}", text(&out));
}

#[test]
fn new_rejects_bad_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&[
        "new",
        "--dir",
        tmp.path().to_str().unwrap(),
        "--hosts",
        "https://etcd:2379",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("https://etcd:2379"),
        "{:?}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn show_prints_subject_sans_usages_and_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(new_certs(dir, &["--days", "30"]).status.success());
    let out = run(&["show", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
    let (stdout, _) = text(&out);
    for needle in [
        "etcd-ca.pem",
        "subject CN: huione etcd CA",
        "subject CN: etcd",
        "subject CN: validator",
        "DNS:localhost, IP:127.0.0.1",
        "serverAuth, clientAuth",
        "keyCertSign",
        "not after:",
        "expires in",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains("expires in 29 days") || stdout.contains("expires in 30 days"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("-key.pem"),
        "keys are not certificates:\n{stdout}"
    );

    let out = run(&[
        "show",
        "--file",
        dir.join("validator.pem").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let (stdout, _) = text(&out);
    assert!(stdout.contains("subject CN: validator"), "{stdout}");
    assert!(stdout.contains("ext. usage: clientAuth"), "{stdout}");
    assert!(!stdout.contains("etcd-ca.pem"), "{stdout}");
}

#[test]
fn show_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.pem");
    let out = run(&["show", "--file", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("missing.pem") && stderr.contains("does not exist"),
        "{stderr}"
    );

    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not pem at all").unwrap();
    let out = run(&["show", "--file", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("junk.pem") && stderr.contains("not a PEM file"),
        "{stderr}"
    );

    assert!(new_certs(tmp.path(), &[]).status.success());
    let key = tmp.path().join("validator-key.pem");
    let out = run(&["show", "--file", key.to_str().unwrap()]);
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("validator-key.pem") && stderr.contains("no certificate"),
        "{stderr}"
    );

    let out = run(&[
        "show",
        "--dir",
        tmp.path().join("nowhere").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("nowhere"), "{:?}", text(&out));
}

#[test]
fn show_marks_expired_certificates() {
    let ca = huione_certs::generate(&huione_certs::CertOptions::new(["localhost"])).unwrap();
    let expired = huione_certs::generate_expired_client(&ca.ca, "old-validator").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("old.pem");
    std::fs::write(&path, expired.cert_pem).unwrap();
    let out = run(&["show", "--file", path.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("EXPIRED"), "{:?}", text(&out));
}

#[test]
fn show_flags_certificates_expiring_within_30_days() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(new_certs(dir, &["--days", "20"]).status.success());
    let out = run(&[
        "show",
        "--file",
        dir.join("validator.pem").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out)
            .0
            .contains("RENEW SOON with `huione-certs renew`"),
        "{:?}",
        text(&out)
    );
    let out = run(&["show", "--file", dir.join("etcd-ca.pem").to_str().unwrap()]);
    assert!(!text(&out).0.contains("RENEW SOON"), "{:?}", text(&out));
}

#[test]
fn renew_issues_new_leaves_from_the_same_ca_with_the_same_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.to_str().unwrap();
    assert!(new_certs(dir, &["--days", "20", "--members", "3"])
        .status
        .success());
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (ca, ca_key, validator, member2) = (
        read("etcd-ca.pem"),
        read("etcd-ca-key.pem"),
        read("validator.pem"),
        read("etcd-member-2.pem"),
    );
    let old_sans = huione_certs::inspect(&dir.join("etcd.pem")).unwrap()[0]
        .sans
        .clone();

    let out = run(&["renew", "--dir", d, "--days", "400"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("validator.pem"), "{:?}", text(&out));
    assert_eq!(read("etcd-ca.pem"), ca, "the CA is kept");
    assert_eq!(read("etcd-ca-key.pem"), ca_key);
    assert_ne!(read("validator.pem"), validator);
    assert_ne!(read("etcd-member-2.pem"), member2);
    let now = huione_certs::time::OffsetDateTime::now_utc();
    for f in [
        "etcd.pem",
        "validator.pem",
        "etcd-member-0.pem",
        "etcd-member-2.pem",
    ] {
        let info = &huione_certs::inspect(&dir.join(f)).unwrap()[0];
        assert!(info.days_left(now) >= 399, "{f}: {}", info.days_left(now));
        assert_eq!(info.issuer_cn, huione_certs::CA_COMMON_NAME, "{f}");
    }
    let new_sans = &huione_certs::inspect(&dir.join("etcd.pem")).unwrap()[0].sans;
    assert_eq!(*new_sans, old_sans, "the same hosts");
    // No temp files left behind.
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "{name}");
    }

    let empty = tempfile::tempdir().unwrap();
    let out = run(&["renew", "--dir", empty.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("etcd-ca.pem"), "{:?}", text(&out));
}

/// An etcd started by hand the way the operator guide does it; killed on drop.
struct Etcd {
    child: Child,
    port: u16,
    certs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts etcd with certs made by the binary, as in the guide:
/// `--cert-file certs/etcd.pem --key-file certs/etcd-key.pem --client-cert-auth
/// --trusted-ca-file certs/etcd-ca.pem`. Fails (not skips) if etcd is missing.
fn start_guide_etcd() -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = new_certs(&certs, &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    let cert = |name: &str| certs.join(name).display().to_string();
    for attempt in 0..5 {
        let (port, peer) = (free_port(), free_port());
        let log = dir.path().join(format!("etcd-{attempt}.log"));
        let logf = std::fs::File::create(&log).unwrap();
        let data = dir.path().join(format!("data{attempt}"));
        let mut child = Command::new("etcd")
            .arg("--name=guide")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls=https://127.0.0.1:{port}"))
            .arg(format!("--advertise-client-urls=https://127.0.0.1:{port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=guide=http://127.0.0.1:{peer}"))
            .arg(format!("--cert-file={}", cert("etcd.pem")))
            .arg(format!("--key-file={}", cert("etcd-key.pem")))
            .arg("--client-cert-auth")
            .arg(format!("--trusted-ca-file={}", cert("etcd-ca.pem")))
            .arg("--logger=zap")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("etcd must be installed (apt-get install etcd-server)");
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                if read_log().contains("address already in use") {
                    break; // another process took a port: retry with new ones
                }
                panic!("etcd exited with {status}:\n{}", read_log());
            }
            if read_log().contains("serving client traffic securely") {
                return Etcd {
                    child,
                    port,
                    certs,
                    _dir: dir,
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("etcd not ready after 20 s:\n{}", read_log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("etcd could not bind a port in 5 attempts");
}

/// `curl --cacert certs/etcd-ca.pem [--cert .. --key ..] https://127.0.0.1:PORT/`:
/// the HTTP status, or None if curl failed (refused handshake).
fn curl(port: u16, certs: &Path, client: bool) -> (Option<u16>, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "--silent",
        "--show-error",
        "--max-time",
        "5",
        "--noproxy",
        "*",
    ])
    .args(["--output", "/dev/null", "--write-out", "%{http_code}"])
    .arg("--cacert")
    .arg(certs.join("etcd-ca.pem"));
    if client {
        cmd.arg("--cert")
            .arg(certs.join("validator.pem"))
            .arg("--key")
            .arg(certs.join("validator-key.pem"));
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .expect("curl must be installed");
    let (stdout, stderr) = text(&out);
    let status = if out.status.success() {
        stdout.trim().parse().ok()
    } else {
        None
    };
    (status, stderr)
}

#[test]
fn guide_check_curl_with_validator_cert_gets_404_and_without_is_refused() {
    let etcd = start_guide_etcd();
    let (status, stderr) = curl(etcd.port, &etcd.certs, true);
    assert_eq!(status, Some(404), "curl with client cert: {stderr}");
    let (status, _) = curl(etcd.port, &etcd.certs, false);
    assert_ne!(
        status,
        Some(404),
        "etcd served a client without a certificate"
    );
}

/// `huione-certs show | head -1`: the reader goes away before the tool is done. It must
/// end quietly, as `cat` does, not panic with "failed printing to stdout: Broken pipe".
#[test]
fn show_into_a_closed_pipe_ends_quietly() {
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    assert!(new_certs(tmp.path(), &[]).status.success());
    let mut child = certs_bin()
        .args(["show", "--dir", tmp.path().to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run huione-certs");
    drop(child.stdout.take()); // the reader is gone before the first line
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}
