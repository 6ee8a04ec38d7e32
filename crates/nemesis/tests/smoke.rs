//! A short nemesis campaign (2 minutes of faults) on real processes, the primary in its
//! own network namespace (needs root, as CI runs; fails, never skips, without it): the
//! pair fails over repeatedly and the auditor finds nothing. Seed 80's schedule starts
//! with a SIGSTOP of the secondary, a cut sparing the watchtower's path, a clock step, a
//! frozen etcd, a SIGKILL of the primary and a full cut.

use std::process::Command;

mod common;

#[test]
fn a_short_campaign_fails_over_and_audits_clean() {
    let bin_dir = common::build_tools();
    let out = Command::new(env!("CARGO_BIN_EXE_huione-nemesis"))
        .args([
            "--minutes",
            "2",
            "--seed",
            "80",
            "--audit-every-secs",
            "40",
            "--netns",
        ])
        .arg("--bin-dir")
        .arg(&bin_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{text}\n{err}");
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    assert!(text.contains("seed 80"), "the seed is printed");
    // The machine-level faults ran (and are in the report's table).
    for kind in ["clock-step", "cut-primary-sparing-watchtower"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(kind)),
            "no {kind} in the report:\n{text}"
        );
    }
    assert!(
        text.contains("audit (final)") && text.contains(" 0 violations"),
        "{text}"
    );
    // The identity changed hands: the etcd lock history has more than the first acquire.
    let failovers: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("failovers (identity changed hands, from the etcd lock history): ")
        })
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("a failover count");
    assert!(failovers >= 2, "{text}");
}
