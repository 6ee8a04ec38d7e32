//! The Debian package as an operator gets it: `scripts/package.sh --profile debug` builds
//! it (the debug binaries, so the suite never makes a release build); `dpkg-deb --info`
//! and `--contents` must show the control data and every file; the package is extracted
//! with `dpkg-deb -x` into a temp dir (never installed on this machine) and each binary
//! in it runs (`--version`, `--help`, and a small real command: keys, certificates, a
//! genesis, a tower lookup, an audit); the systemd units must name binaries the package
//! holds and pass `systemd-analyze verify`, and each refuses to start with its flag
//! variable empty, naming the file to fill in; the flags in the example flag files must be
//! flags the binaries know.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BINARIES: [&str; 7] = [
    "huione-validator",
    "huione-audit",
    "huione-watchtower",
    "huione-keygen",
    "huione-certs",
    "huione-tower",
    "huione-genesis",
];
const UNITS: [&str; 2] = ["huione-validator.service", "huione-watchtower.service"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd`, which must succeed; its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `scripts/package.sh --profile debug --out <out>`, run as from a shell (without the
/// variables cargo sets for this test, so its `cargo build` does not rebuild anything the
/// test build made).
fn build_package(out: &Path) -> PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts/package.sh"))
        .args(["--profile", "debug", "--out"])
        .arg(out)
        .current_dir(workspace_root());
    huione_testkit::without_cargo_test_env(&mut cmd);
    let stdout = ok(&mut cmd);
    let deb = PathBuf::from(stdout.trim());
    assert!(deb.is_file(), "package.sh printed {stdout:?}, not a file");
    deb
}

/// A unit's `ExecStartPre=/bin/sh -c '...'` (systemd passes the quoted script as one
/// argument and turns `$$` into `$`): with the unit's flag variable empty it must fail and
/// name the file to fill in; with flags set it must pass.
fn check_flags_guard(unit: &str, value: &str) {
    let script = value
        .strip_prefix("/bin/sh -c '")
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or_else(|| panic!("{unit}: ExecStartPre is not /bin/sh -c '...': {value}"))
        .replace("$$", "$");
    let var = if unit.contains("watchtower") {
        "HUIONE_WATCHTOWER_ARGS"
    } else {
        "HUIONE_VALIDATOR_ARGS"
    };
    let file = format!("/etc/default/{}", unit.trim_end_matches(".service"));
    let empty = run(Command::new("sh").args(["-c", &script]).env(var, ""));
    assert_eq!(empty.status.code(), Some(1), "{unit}: {empty:?}");
    assert!(text(&empty.stderr).contains(&file), "{unit}: {empty:?}");
    let set = run(Command::new("sh")
        .args(["-c", &script])
        .env(var, "--ledger x"));
    assert!(set.status.success(), "{unit}: {set:?}");
}

#[test]
fn the_debian_package_builds_and_its_contents_run() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_package(tmp.path());
    let version = env!("CARGO_PKG_VERSION");
    let arch = ok(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("huione_{version}-1_{}.deb", arch.trim())
    );

    // Control data.
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for want in [
        "Package: huione".to_string(),
        format!("Version: {version}-1"),
        format!("Architecture: {}", arch.trim()),
        "Maintainer: ".into(),
        "Description: ".into(),
        "postinst".into(),
        "conffiles".into(),
    ] {
        assert!(
            info.contains(&want),
            "dpkg-deb --info lacks {want:?}:\n{info}"
        );
    }
    let depends = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends:\n{info}"));
    assert!(
        depends.contains("adduser") && depends.contains("libc6 (>= 2."),
        "{depends}"
    );

    // Every file, root-owned, binaries executable.
    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let listed: Vec<(&str, &str, &str)> = contents
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((*f.first()?, *f.get(1)?, *f.last()?))
        })
        .collect();
    let mode_of = |path: &str| {
        listed
            .iter()
            .find(|(_, _, p)| p.trim_start_matches('.') == path)
            .map(|(mode, owner, _)| (mode.to_string(), owner.to_string()))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{contents}"))
    };
    for b in BINARIES {
        assert_eq!(
            mode_of(&format!("/usr/bin/{b}")),
            ("-rwxr-xr-x".into(), "root/root".into())
        );
    }
    for u in UNITS {
        mode_of(&format!("/lib/systemd/system/{u}"));
    }
    for f in [
        "/etc/default/huione-validator",
        "/etc/default/huione-watchtower",
        "/usr/share/doc/huione/copyright",
        "/usr/share/doc/huione/changelog.Debian.gz",
        "/usr/share/doc/huione/README.md",
        "/usr/share/huione/prometheus/huione.rules.yml",
        "/usr/share/huione/grafana/huione.json",
    ] {
        assert_eq!(mode_of(f), ("-rw-r--r--".into(), "root/root".into()), "{f}");
    }
    assert!(
        listed.iter().all(|(_, owner, _)| *owner == "root/root"),
        "{contents}"
    );

    // Maintainer scripts: a system user huione, and shell that parses.
    let control = tmp.path().join("control");
    ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("adduser --system --group") && postinst.contains(" huione"),
        "{postinst}"
    );
    for script in ["postinst", "postrm"] {
        ok(Command::new("sh").arg("-n").arg(control.join(script)));
    }
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(
        conffiles,
        "/etc/default/huione-validator\n/etc/default/huione-watchtower\n"
    );

    // Extracted, each binary runs.
    let root = tmp.path().join("root");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let bin = |name: &str| root.join("usr/bin").join(name);
    for b in BINARIES {
        let v = ok(Command::new(bin(b)).arg("--version"));
        assert_eq!(v.trim(), format!("{b} {version}"));
        let help = ok(Command::new(bin(b)).arg("--help"));
        assert!(help.contains("Usage:"), "{b} --help:\n{help}");
    }
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let at = |name: &str| work.join(name).display().to_string();
    let id = ok(Command::new(bin("huione-keygen")).args(["new", "-o", &at("id.json"), "--silent"]));
    ok(Command::new(bin("huione-keygen")).args(["new", "-o", &at("vote.json"), "--silent"]));
    let pubkey = ok(Command::new(bin("huione-keygen")).args(["pubkey", &at("id.json")]));
    assert_eq!(pubkey.trim(), id.trim());
    assert!((32..=44).contains(&pubkey.trim().len()), "{pubkey}");
    ok(Command::new(bin("huione-certs")).args([
        "new",
        "--dir",
        &at("certs"),
        "--hosts",
        "localhost,127.0.0.1",
    ]));
    for f in [
        "etcd-ca.pem",
        "etcd.pem",
        "etcd-key.pem",
        "validator.pem",
        "validator-key.pem",
    ] {
        assert!(work.join("certs").join(f).is_file(), "no certs/{f}");
    }
    let shown = ok(Command::new(bin("huione-certs")).args(["show", "--dir", &at("certs")]));
    assert!(shown.contains("validator.pem"), "{shown}");
    ok(Command::new(bin("huione-genesis")).args([
        "--out",
        &at("genesis.json"),
        "--validator",
        &format!("{}:{}:100", at("id.json"), at("vote.json")),
    ]));
    let genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("genesis.json")).unwrap()).unwrap();
    assert_eq!(genesis["validators"][0]["identity"], pubkey.trim());
    // No tower stored yet: said so, exit code 1.
    std::fs::create_dir(work.join("ledger")).unwrap();
    let tower = run(Command::new(bin("huione-tower")).args([
        "show",
        "--identity",
        &at("id.json"),
        "--tower",
        &at("ledger"),
    ]));
    assert_eq!(tower.status.code(), Some(1));
    assert!(
        text(&tower.stdout).contains("tower:      none stored"),
        "{tower:?}"
    );
    // An audit of a ledger without a log: exit code 2, the file named.
    let audit = run(Command::new(bin("huione-audit")).arg(at("ledger")));
    assert_eq!(audit.status.code(), Some(2), "{audit:?}");
    assert!(text(&audit.stderr).contains(&at("ledger")), "{audit:?}");
    // The validator refuses a missing identity file, naming it.
    let validator = run(Command::new(bin("huione-validator")).args([
        "--identity",
        &at("missing.json"),
        "--ledger",
        &at("ledger"),
    ]));
    assert!(!validator.status.success());
    assert!(
        text(&validator.stderr).contains("missing.json"),
        "{validator:?}"
    );

    // The units run binaries the package holds, read flag files it ships, and pass
    // systemd's own check (which says only that the binaries are not installed here).
    let mut commands = BTreeSet::new();
    let mut guards = 0;
    for u in UNITS {
        let unit = std::fs::read_to_string(root.join("lib/systemd/system").join(u)).unwrap();
        assert!(unit.contains("\nUser=huione\n"), "{u}:\n{unit}");
        for line in unit.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if key.starts_with("Exec") {
                let exe = value
                    .trim_start_matches(['-', '@', ':', '+', '!'])
                    .split_whitespace()
                    .next()
                    .unwrap();
                if exe != "/bin/sh" {
                    let inside = root.join(exe.trim_start_matches('/'));
                    assert!(inside.is_file(), "{u}: {exe} is not in the package");
                    commands.insert(exe.to_string());
                }
            }
            if key == "EnvironmentFile" {
                let f = root.join(value.trim_start_matches('-').trim_start_matches('/'));
                assert!(f.is_file(), "{u}: {value} is not in the package");
            }
            if key == "ExecStartPre" {
                check_flags_guard(u, value);
                guards += 1;
            }
        }
    }
    assert_eq!(guards, UNITS.len(), "every unit checks its flag variable");
    assert_eq!(
        commands,
        BTreeSet::from([
            "/usr/bin/huione-validator".to_string(),
            "/usr/bin/huione-watchtower".to_string()
        ])
    );
    let verify = run(Command::new("systemd-analyze")
        .arg("verify")
        .args(UNITS.map(|u| root.join("lib/systemd/system").join(u))));
    let said = format!("{}{}", text(&verify.stdout), text(&verify.stderr));
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        let fine = commands.iter().any(|c| {
            line.ends_with(&format!(
                "Command {c} is not executable: No such file or directory"
            ))
        });
        assert!(fine, "systemd-analyze verify:\n{said}");
    }

    // The example flags in /etc/default are flags the binaries know.
    for (file, b) in [
        ("huione-validator", "huione-validator"),
        ("huione-watchtower", "huione-watchtower"),
    ] {
        let defaults = std::fs::read_to_string(root.join("etc/default").join(file)).unwrap();
        let help = ok(Command::new(bin(b)).arg("--help"));
        let mut examples = 0;
        for line in defaults.lines().filter(|l| l.starts_with("#HUIONE_")) {
            examples += 1;
            for flag in line.split(['"', ' ']).filter(|w| w.starts_with("--")) {
                assert!(
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                    "/etc/default/{file}: {b} has no flag {flag}"
                );
            }
        }
        assert!(examples >= 1, "/etc/default/{file} has no example");
    }
}
