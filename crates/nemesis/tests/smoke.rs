//! A short nemesis campaign (2 minutes of faults) on real processes, every machine (etcd,
//! v0, v1, the primary, the secondary with the watchtower, the second standby) in its own
//! network namespace (needs root, as CI runs; fails, never skips, without it): the
//! machines are really separate (one namespace each, and the cluster sees every
//! validator at its own machine's address), the pair fails over repeatedly, the auditor
//! finds nothing, and no namespace is left behind. Seed 80's schedule starts with a
//! SIGSTOP of the secondary, a cut sparing the watchtower's path, a clock step, a frozen
//! etcd, a SIGKILL of the primary and a full cut.

use std::collections::BTreeSet;
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
    let report = text
        .split_once("== huione-nemesis report")
        .expect("a report")
        .1;
    // One namespace per machine, each with its own address.
    let machines: Vec<(&str, &str, &str)> = report
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("machine ")?.split_whitespace();
            Some((w.next()?, w.next()?, w.next()?))
        })
        .collect();
    let names: Vec<&str> = machines.iter().map(|m| m.0).collect();
    assert_eq!(
        names,
        ["v0", "v1", "primary", "secondary", "standby2", "etcd-0"],
        "{report}"
    );
    let ips: BTreeSet<&str> = machines.iter().map(|m| m.1).collect();
    let namespaces: BTreeSet<&str> = machines.iter().map(|m| m.2).collect();
    assert_eq!(ips.len(), machines.len(), "shared addresses: {report}");
    assert_eq!(
        namespaces.len(),
        machines.len(),
        "shared namespaces: {report}"
    );
    assert!(
        machines
            .iter()
            .all(|m| m.2 != "-" && !m.1.starts_with("127.")),
        "a machine on the host's network: {report}"
    );
    // The cluster (getClusterNodes) sees each validator at its own machine's address.
    for (name, ip, _) in &machines[..5] {
        let addr = report
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("gossip {name} ")))
            .find_map(|r| r.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no gossip address of {name}:\n{report}"));
        assert_eq!(
            addr.rsplit_once(':').map(|a| a.0),
            Some(*ip),
            "{name} advertises {addr}, not its machine's {ip}:\n{report}"
        );
    }
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
    // Every namespace is gone.
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for (name, _, ns) in &machines {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(*ns)),
            "{name}'s namespace {ns} left behind"
        );
    }
}
