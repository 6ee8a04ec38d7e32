//! `huione-local-cluster` with a fake validator (tests/fake_validator.py, which answers
//! getSlot/getHealth like a node): argument validation, the files and cluster.json it
//! writes, each node's command line, progress and status output, and a clean stop with no
//! process left behind — on SIGTERM, on --run-for-secs, when a node ignores SIGTERM, and
//! when the launcher itself is SIGKILLed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{all_pids, assert_all_gone, fake_validator, Launcher, LAUNCHER};
use huione_cluster::genesis::read_genesis;
use huione_cluster::manifest::ClusterState;
use huione_cluster::plan::Role;

const START: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(30);

fn fake() -> String {
    fake_validator().to_str().unwrap().to_string()
}

/// Reads the arguments the fake validator recorded.
fn recorded_args(ledger: &std::path::Path) -> Vec<String> {
    serde_json::from_slice(&std::fs::read(ledger.join("fake-args.json")).unwrap()).unwrap()
}

#[test]
fn bad_arguments_exit_2_with_the_fix_and_start_nothing() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("c");
    let d = dir.to_str().unwrap();
    let f = fake();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--validators", "0", "--dir", d, "--validator-bin", &f],
            "between 1 and 32",
        ),
        (
            vec![
                "--validators",
                "2",
                "--dir",
                d,
                "--failover-pair",
                "--validator-bin",
                &f,
            ],
            "needs --etcd",
        ),
        (
            vec![
                "--validators",
                "2",
                "--dir",
                d,
                "--etcd",
                "--etcd-members",
                "2",
                "--validator-bin",
                &f,
            ],
            "1 or 3",
        ),
        (
            vec![
                "--validators",
                "2",
                "--dir",
                d,
                "--etcd-members",
                "3",
                "--validator-bin",
                &f,
            ],
            "needs --etcd",
        ),
        (
            vec![
                "--validators",
                "2",
                "--dir",
                d,
                "--slots-per-epoch",
                "6",
                "--validator-bin",
                &f,
            ],
            "multiple of 4",
        ),
        (
            vec![
                "--validators",
                "2",
                "--dir",
                d,
                "--base-port",
                "65530",
                "--validator-bin",
                &f,
            ],
            "--base-port",
        ),
        (
            vec![
                "--validators",
                "2",
                "--dir",
                d,
                "--validator-bin",
                "/nonexistent/v",
            ],
            "not an executable",
        ),
        (
            vec![
                "--validators",
                "2",
                "--dir",
                work.path().parent().unwrap().to_str().unwrap(),
                "--validator-bin",
                &f,
            ],
            "not empty",
        ),
        (vec!["--dir", d], "--validators"),
    ];
    for (args, want) in cases {
        let out = Command::new(LAUNCHER).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        assert!(!dir.exists(), "{args:?} created the cluster dir");
    }
}

#[test]
fn three_validators_cluster_json_progress_status_and_sigterm_stop() {
    let work = tempfile::tempdir().unwrap();
    let f = fake();
    let mut l = Launcher::start(
        work.path(),
        &[
            "--validators",
            "3",
            "--slot-ms",
            "100",
            "--start-in-ms",
            "0",
            "--validator-bin",
            &f,
            "--validator-arg=--fake-extra",
        ],
        &[],
    );
    let m = l.wait_for_state(ClusterState::Running, START);
    assert_eq!(m.format_version, 1);
    assert_eq!(m.launcher_pid, l.child.id());
    assert_eq!(m.dir, l.dir);
    assert!(m.etcd.is_none());
    assert_eq!(m.slot_ms, 100);
    let names: Vec<&str> = m.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["validator-0", "validator-1", "validator-2"]);
    let genesis = read_genesis(&m.genesis).unwrap();
    assert_eq!(genesis.hash.to_string(), m.genesis_hash);
    assert_eq!(genesis.validators.len(), 3);
    let stakes: Vec<u64> = genesis.validators.iter().map(|v| v.stake).collect();
    assert!(
        stakes.iter().all(|s| *s == stakes[0] && *s > 0),
        "equal stakes: {stakes:?}"
    );
    for (i, n) in m.nodes.iter().enumerate() {
        assert_eq!(n.role, Role::Validator);
        assert_eq!(n.tower_storage, "file");
        assert_eq!(genesis.validators[i].identity, n.identity);
        assert_eq!(genesis.validators[i].vote_account, n.vote_account);
        assert_eq!(genesis.validators[i].authorized_voter, n.identity);
        assert_eq!(n.stake, stakes[i]);
        assert_eq!(n.rpc_url, format!("http://127.0.0.1:{}", n.rpc_port));
        assert_eq!(n.gossip, format!("127.0.0.1:{}", n.gossip_port));
        assert_eq!(n.ledger, l.dir.join(&n.name).join("ledger"));
        assert_eq!(n.admin_socket, n.ledger.join("admin.rpc"));
        assert_eq!(n.log, l.dir.join(&n.name).join("validator.log"));
        assert_eq!(
            huione_keys::Keypair::read_file(&n.identity_keypair)
                .unwrap()
                .pubkey(),
            n.identity
        );
        let vote_file = n.vote_account_keypair.as_ref().unwrap();
        assert_eq!(
            huione_keys::Keypair::read_file(vote_file).unwrap().pubkey(),
            n.vote_account
        );
        assert!(std::fs::read_to_string(&n.log)
            .unwrap()
            .contains("fake validator up"));
        // The node got exactly the command line in the manifest.
        let args = recorded_args(&n.ledger);
        assert_eq!(args, n.command[1..]);
        assert_eq!(n.command[0], f);
        assert_eq!(args.last().unwrap(), "--fake-extra");
        let has_entrypoint = args
            .windows(2)
            .any(|w| w[0] == "--entrypoint" && w[1] == m.entrypoint);
        assert_eq!(
            has_entrypoint,
            i > 0,
            "node {i}: only node 0 has no --entrypoint"
        );
    }
    assert_eq!(m.entrypoint, m.nodes[0].gossip);
    // Status lines flow once per second.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !l.output().contains("validator-2 ") || l.output().matches("s]").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", l.output());
        std::thread::sleep(Duration::from_millis(200));
    }
    let pids = all_pids(&m);
    l.signal(libc::SIGTERM);
    let status = l.wait(STOP);
    assert!(status.success(), "{status}\n{}", l.output());
    assert_all_gone(&pids, Duration::from_secs(5));
    let out = l.output();
    assert!(
        out.contains("starting: ") && out.contains("answer RPC"),
        "{out}"
    );
    assert!(out.contains("stopped"), "{out}");
    for n in &m.nodes {
        assert!(
            n.ledger.join("fake-terminated").exists(),
            "{} got no SIGTERM",
            n.name
        );
    }
    let m = huione_cluster::manifest::ClusterManifest::read(&l.dir).unwrap();
    assert_eq!(m.state, ClusterState::Stopped);
}

#[test]
fn etcd_with_failover_pair_layout_and_flags() {
    let work = tempfile::tempdir().unwrap();
    let f = fake();
    let mut l = Launcher::start(
        work.path(),
        &[
            "--validators",
            "2",
            "--etcd",
            "--failover-pair",
            "--run-for-secs",
            "60",
            "--validator-bin",
            &f,
        ],
        &[],
    );
    let m = l.wait_for_state(ClusterState::Running, START);
    let names: Vec<(&str, Role)> = m.nodes.iter().map(|n| (n.name.as_str(), n.role)).collect();
    assert_eq!(
        names,
        [
            ("validator-0", Role::Validator),
            ("primary", Role::Primary),
            ("secondary", Role::Secondary)
        ]
    );
    let certs = l.dir.join("certs");
    for file in [
        "etcd-ca.pem",
        "etcd.pem",
        "etcd-key.pem",
        "validator.pem",
        "validator-key.pem",
    ] {
        assert!(certs.join(file).is_file(), "{file}");
    }
    let etcd = m.etcd.clone().expect("etcd entry");
    assert_eq!(etcd.members, 1);
    assert_eq!(etcd.flags.endpoints.len(), 1);
    assert_eq!(etcd.flags.cacert_file, certs.join("etcd-ca.pem"));
    assert_eq!(etcd.flags.cert_file, certs.join("validator.pem"));
    assert_eq!(etcd.flags.key_file, certs.join("validator-key.pem"));
    assert_eq!(etcd.data_dir, l.dir.join("etcd"));
    assert!(l.dir.join("etcd/m0.etcd").is_dir());
    assert!(etcd.pids[0].is_some());

    let (v0, primary, secondary) = (&m.nodes[0], &m.nodes[1], &m.nodes[2]);
    // Genesis: two staked validators; the secondary is not in it.
    let genesis = read_genesis(&m.genesis).unwrap();
    assert_eq!(genesis.validators.len(), 2);
    assert!(genesis
        .validators
        .iter()
        .all(|v| v.identity != secondary.identity));
    assert_eq!(secondary.stake, 0);
    assert_eq!(secondary.vote_account, primary.vote_account);
    assert_eq!(
        secondary.identity_keypair,
        l.dir.join("secondary/secondary-validator-keypair.json")
    );
    assert_eq!(
        secondary.authorized_voter_keypair.as_ref(),
        Some(&primary.identity_keypair)
    );
    assert!(secondary.vote_account_keypair.is_none());

    let etcd_flags = {
        let mut a = vec!["--tower-storage".to_string(), "etcd".into()];
        a.extend(["--etcd-endpoint".into(), etcd.flags.endpoints[0].clone()]);
        for (flag, path) in [
            ("--etcd-cacert-file", &etcd.flags.cacert_file),
            ("--etcd-cert-file", &etcd.flags.cert_file),
            ("--etcd-key-file", &etcd.flags.key_file),
        ] {
            a.extend([flag.to_string(), path.display().to_string()]);
        }
        a.extend(["--etcd-domain-name".into(), "localhost".into()]);
        a.join(" ")
    };
    let args = |n: &huione_cluster::manifest::NodeEntry| recorded_args(&n.ledger).join(" ");
    assert!(args(primary).contains(&etcd_flags), "{}", args(primary));
    assert!(args(secondary).contains(&etcd_flags), "{}", args(secondary));
    assert!(args(v0).ends_with("--tower-storage file"), "{}", args(v0));
    assert_eq!(v0.tower_storage, "file");
    assert_eq!(
        (
            primary.tower_storage.as_str(),
            secondary.tower_storage.as_str()
        ),
        ("etcd", "etcd")
    );
    assert!(args(secondary).contains(&format!(
        "--vote-account {} --no-check-vote-account --authorized-voter {}",
        primary.vote_account,
        primary.identity_keypair.display()
    )));

    let pids = all_pids(&m);
    assert_eq!(pids.len(), 4);
    l.signal(libc::SIGINT);
    assert!(l.wait(STOP).success(), "{}", l.output());
    assert_all_gone(&pids, Duration::from_secs(5));
    assert!(l.output().contains("stopping etcd"), "{}", l.output());
}

#[test]
fn a_node_failing_at_start_fails_the_launch_with_its_log() {
    let work = tempfile::tempdir().unwrap();
    let f = fake();
    let mut l = Launcher::start(
        work.path(),
        &["--validators", "2", "--validator-bin", &f],
        &[("FAKE_VALIDATOR_MODE", "exit")],
    );
    let status = l.wait(STOP);
    assert_eq!(status.code(), Some(1), "{}", l.output());
    let out = l.output();
    assert!(
        out.contains("exited during start-up (exit code 3)"),
        "{out}"
    );
    assert!(
        out.contains("refusing to start"),
        "the log tail is shown: {out}"
    );
    let m = huione_cluster::manifest::ClusterManifest::read(&l.dir).unwrap();
    assert_eq!(m.state, ClusterState::Stopped);
    assert_all_gone(&all_pids(&m), Duration::from_secs(5));
}

#[test]
fn run_for_secs_stops_by_itself_and_sigkills_a_node_that_ignores_sigterm() {
    let work = tempfile::tempdir().unwrap();
    let f = fake();
    let mut l = Launcher::start(
        work.path(),
        &[
            "--validators",
            "1",
            "--run-for-secs",
            "2",
            "--stop-timeout-secs",
            "1",
            "--validator-bin",
            &f,
        ],
        &[("FAKE_VALIDATOR_MODE", "ignore-term")],
    );
    let m = l.wait_for_state(ClusterState::Running, START);
    let status = l.wait(STOP);
    assert!(status.success(), "{}", l.output());
    let out = l.output();
    assert!(out.contains("--run-for-secs reached"), "{out}");
    assert!(
        out.contains("validator-0 did not exit on SIGTERM: killed"),
        "{out}"
    );
    assert_all_gone(&all_pids(&m), Duration::from_secs(5));
}

#[test]
fn a_killed_launcher_leaves_no_orphans() {
    let work = tempfile::tempdir().unwrap();
    let f = fake();
    let mut l = Launcher::start(
        work.path(),
        &["--validators", "2", "--etcd", "--validator-bin", &f],
        &[],
    );
    let m = l.wait_for_state(ClusterState::Running, START);
    let pids = all_pids(&m);
    assert_eq!(pids.len(), 3);
    l.signal(libc::SIGKILL);
    l.wait(STOP);
    // The children get SIGTERM from the kernel when their parent dies.
    assert_all_gone(&pids, Duration::from_secs(15));
}
