//! A short campaign of full disks only (needs root for the tmpfs mounts, as CI runs;
//! fails, never skips, without it): the pair's primary's and secondary's ledgers each on
//! a small tmpfs, filled by a filler file for 1-10 s at a time. The nodes must log what
//! they could not write, naming the path; every vote of the vote account found in a
//! stored block must have an audit record; the audit stays clean; the pair settles again
//! after every fault; and nothing stays mounted afterwards.

use std::process::Command;

mod common;

/// The mount points under `dir` still listed in /proc/mounts.
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    let dir = dir.to_string_lossy();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(&*dir))
        .map(str::to_string)
        .collect()
}

#[test]
fn full_disks_under_the_pairs_ledgers_lose_no_audit_record() {
    let bin_dir = common::build_tools();
    let run_dir =
        std::env::temp_dir().join(format!("huione-nemesis-full-disk-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_huione-nemesis"))
        .args([
            "--minutes",
            "0.75",
            "--seed",
            "7",
            "--audit-every-secs",
            "30",
        ])
        .args(["--full-disk", "--disk-mb", "32"])
        .args(["--faults", "full-disk-primary,full-disk-secondary"])
        .arg("--dir")
        .arg(&run_dir)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{text}\n{err}");
    let left = mounts_under(&run_dir);
    assert!(left.is_empty(), "still mounted after the run: {left:?}");
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    assert!(!run_dir.exists(), "a passing run removes its directory");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("full-disk-primary")),
        "no full-disk-primary fault in the report:\n{text}"
    );
    // The faults bit: the nodes logged writes refused for lack of space.
    let errors: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("full-disk errors the nodes logged (votes and blocks not sent): ")
        })
        .and_then(|n| n.trim().parse().ok())
        .expect("a full-disk error count");
    assert!(errors > 0, "{text}");
    // Landed votes were checked against the audit logs, and none lacked a record.
    let (checked, missing) = text
        .lines()
        .find_map(|l| l.strip_prefix("votes of the vote account in stored blocks: "))
        .and_then(|r| r.split_once(", without an audit record: "))
        .map(|(n, m)| (n.parse::<u64>().unwrap(), m.trim().parse::<u64>().unwrap()))
        .expect("the landed-vote check");
    assert!(checked > 0, "{text}");
    assert_eq!(missing, 0, "{text}");
    assert!(
        text.contains("audit (final)") && text.contains(" 0 violations"),
        "{text}"
    );
}
