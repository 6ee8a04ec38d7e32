//! A real `huione-validator` started on a ledger with chain history: it loads the newest
//! snapshot that verifies (a damaged newer one is reported by file name), replays only
//! the blocks after it, votes, and keeps appending to the same block store.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use huione_core::audit::AuditRecord;
use huione_core::{Genesis, GenesisValidator};
use huione_keys::Keypair;
use huione_testkit::nodes::{free_port, now_ms, wait_for};
use huione_validator::ledger::generate::ChainGen;
use huione_validator::ledger::{audit_log, LedgerConfig, LedgerFiles};

const SLOT_MS: u64 = 100;
const HISTORY: u64 = 5_000;

fn config() -> LedgerConfig {
    LedgerConfig {
        snapshot_interval_slots: 500,
        ..LedgerConfig::default()
    }
}

fn votes_in(ledger: &Path) -> usize {
    audit_log::read_records(ledger)
        .map(|r| {
            r.iter()
                .filter(|r| matches!(r, AuditRecord::Vote(_)))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_node_restarts_from_the_newest_good_snapshot_replays_the_tail_and_votes() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    std::fs::create_dir_all(&ledger).unwrap();
    let id = Keypair::from_secret(&[21; 32]);
    let vote_account = Keypair::from_secret(&[22; 32]).pubkey();
    let genesis = Genesis::new(
        vec![GenesisValidator {
            identity: id.pubkey(),
            vote_account,
            authorized_voter: id.pubkey(),
            stake: 100,
        }],
        SLOT_MS,
        8192,
        now_ms() - (HISTORY + 20) * SLOT_MS,
    )
    .unwrap();
    std::fs::write(
        ledger.join("genesis.json"),
        serde_json::to_vec(&genesis).unwrap(),
    )
    .unwrap();
    let id_file = dir.path().join("id.json");
    id.write_file(&id_file, true).unwrap();
    let (mut files, _) = LedgerFiles::open(&ledger, config(), genesis.hash).unwrap();
    let mut g = ChainGen::new(genesis.clone(), id.clone(), vote_account);
    g.write(&mut files, HISTORY, 100).unwrap();
    let snaps = files.snapshots().list();
    assert!(snaps.len() >= 2, "{snaps:?}");
    drop(files);
    // Damage the newest snapshot: the node must say so and use the one before.
    let (bad_slot, bad_file) = snaps[0].clone();
    let good_slot = snaps[1].0;
    let mut bytes = std::fs::read(&bad_file).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x41;
    std::fs::write(&bad_file, bytes).unwrap();

    let port = free_port();
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_huione-validator"))
        .arg("--ledger")
        .arg(&ledger)
        .arg("--identity")
        .arg(&id_file)
        .args(["--vote-account", &vote_account.to_string()])
        .args(["--gossip-port", &port.to_string()])
        .args(["--rpc-port", &port.to_string()])
        .args(["--snapshot-interval-slots", "500"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let voted = wait_for(Duration::from_secs(60), || {
        (votes_in(&ledger) >= 3).then_some(())
    });
    let text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    if voted.is_none() {
        let _ = child.kill();
        panic!("no votes within 60 s:\n{}", text());
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("did not stop on SIGTERM:\n{}", text());
    };
    assert!(status.success(), "{status}\n{}", text());
    let log = text();
    assert!(
        log.contains(&bad_file.display().to_string()) && log.contains("checksum mismatch"),
        "the damaged snapshot {bad_slot} is not named:\n{log}"
    );
    let loaded = log
        .lines()
        .find(|l| l.contains("ledger loaded"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        loaded.contains(&format!("snapshot=Some({good_slot})")),
        "{loaded}"
    );
    // Only the tail: blocks from the rooted ones the core keeps below the snapshot on,
    // far fewer than the history.
    let blocks: u64 = loaded
        .split_whitespace()
        .find_map(|w| w.strip_prefix("blocks="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{loaded}"));
    assert!(
        blocks <= HISTORY - good_slot + huione_core::MAX_ROOTED_BLOCKS + 1,
        "{loaded}"
    );
    // The node's own blocks went into the same store, which reopens without damage.
    let (files, restored) = LedgerFiles::open(&ledger, config(), genesis.hash).unwrap();
    assert!(restored.damage.is_empty(), "{:?}", restored.damage);
    let (_, hi) = files.block_store().slot_range().unwrap();
    assert!(
        hi > HISTORY,
        "the node's blocks were not stored: highest {hi}"
    );
}

fn spawn(args: &[String], log_path: &Path) -> std::process::Child {
    let log = std::fs::File::create(log_path).unwrap();
    Command::new(env!("CARGO_BIN_EXE_huione-validator"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_node_with_an_empty_ledger_joins_from_a_peers_snapshot_instead_of_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_a = dir.path().join("a");
    let ledger_b = dir.path().join("b");
    std::fs::create_dir_all(&ledger_a).unwrap();
    let id = Keypair::from_secret(&[31; 32]);
    let vote_account = Keypair::from_secret(&[32; 32]).pubkey();
    let genesis = Genesis::new(
        vec![GenesisValidator {
            identity: id.pubkey(),
            vote_account,
            authorized_voter: id.pubkey(),
            stake: 100,
        }],
        SLOT_MS,
        8192,
        now_ms() - (HISTORY + 20) * SLOT_MS,
    )
    .unwrap();
    let genesis_file = dir.path().join("genesis.json");
    std::fs::write(&genesis_file, serde_json::to_vec(&genesis).unwrap()).unwrap();
    std::fs::copy(&genesis_file, ledger_a.join("genesis.json")).unwrap();
    let id_file = dir.path().join("a-id.json");
    id.write_file(&id_file, true).unwrap();
    let b_id_file = dir.path().join("b-id.json");
    Keypair::from_secret(&[33; 32])
        .write_file(&b_id_file, true)
        .unwrap();
    let (mut files, _) = LedgerFiles::open(&ledger_a, config(), genesis.hash).unwrap();
    ChainGen::new(genesis.clone(), id.clone(), vote_account)
        .write(&mut files, HISTORY, 100)
        .unwrap();
    drop(files);

    // A: the validator, on its chain history.
    let port_a = free_port();
    let args_a: Vec<String> = vec![
        "--ledger".into(),
        ledger_a.display().to_string(),
        "--identity".into(),
        id_file.display().to_string(),
        "--vote-account".into(),
        vote_account.to_string(),
        "--gossip-port".into(),
        port_a.to_string(),
        "--rpc-port".into(),
        port_a.to_string(),
    ];
    let log_a = dir.path().join("a.log");
    let _a = Killed(spawn(&args_a, &log_a));
    let text = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(60), || (votes_in(&ledger_a) >= 3)
            .then_some(()))
        .is_some(),
        "A does not vote:\n{}",
        text(&log_a)
    );

    // A serves the snapshot of its root once it has one (within a second or so).
    let peer = format!("127.0.0.1:{port_a}");
    let served = wait_for(Duration::from_secs(30), || {
        huione_validator::ledger::fetch_snapshot(&peer).ok()
    })
    .unwrap_or_else(|| panic!("A serves no snapshot:\n{}", text(&log_a)));
    let served = huione_validator::ledger::snapshots::decode(&served, genesis.hash).unwrap();
    assert!(served.slot() > HISTORY - 100, "{}", served.slot());

    // B: a new machine (empty ledger) for the same vote account, joining from A.
    let port_b = free_port();
    let args_b: Vec<String> = vec![
        "--ledger".into(),
        ledger_b.display().to_string(),
        "--genesis".into(),
        genesis_file.display().to_string(),
        "--identity".into(),
        b_id_file.display().to_string(),
        "--vote-account".into(),
        vote_account.to_string(),
        "--no-check-vote-account".into(),
        "--entrypoint".into(),
        peer.clone(),
        "--snapshot-from".into(),
        peer,
        "--gossip-port".into(),
        port_b.to_string(),
        "--rpc-port".into(),
        port_b.to_string(),
    ];
    let log_b = dir.path().join("b.log");
    let _b = Killed(spawn(&args_b, &log_b));
    let slot = |port: u16, commitment: &str| {
        huione_testkit::nodes::rpc(
            port,
            "getSlot",
            serde_json::json!([{ "commitment": commitment }]),
        )
        .and_then(|v| v["result"].as_u64())
    };
    // B follows A's chain: its processed slot reaches where A is now, by replaying only
    // A's new blocks (repaired back to the snapshot's root), not the history.
    let a_now = slot(port_a, "processed").expect("A answers getSlot");
    let caught_up = wait_for(Duration::from_secs(60), || {
        slot(port_b, "processed").filter(|s| *s >= a_now)
    });
    let b_log = text(&log_b);
    assert!(
        caught_up.is_some(),
        "B did not catch up to {a_now}:\n{b_log}"
    );
    let joined = b_log
        .lines()
        .find(|l| l.contains("starting from the peer's snapshot"))
        .unwrap_or_else(|| panic!("{b_log}"));
    let snap_slot: u64 = joined
        .split_whitespace()
        .find_map(|w| w.strip_prefix("slot="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{joined}"));
    assert!(snap_slot > HISTORY - 100, "an old root: {joined}");
    let loaded = b_log
        .lines()
        .find(|l| l.contains("ledger loaded"))
        .unwrap_or_else(|| panic!("{b_log}"));
    assert!(
        loaded.contains("blocks=0") && loaded.contains(&format!("snapshot=Some({snap_slot})")),
        "{loaded}"
    );
    // B's vote account state (from the snapshot, plus A's new blocks) is A's: the same
    // root and credits for the vote account.
    let account = |port: u16| {
        let v = huione_testkit::nodes::rpc(port, "getVoteAccounts", serde_json::json!([]))?;
        let a = v["result"]["current"]
            .as_array()?
            .iter()
            .find(|a| a["votePubkey"] == vote_account.to_string())?
            .clone();
        Some((a["rootSlot"].clone(), a["epochCredits"].clone()))
    };
    let same = wait_for(Duration::from_secs(20), || {
        let (a, b) = (account(port_a)?, account(port_b)?);
        (a == b && a.0.as_u64().is_some_and(|r| r > 0)).then_some(a)
    });
    assert!(
        same.is_some(),
        "A {:?} B {:?}\n{b_log}",
        account(port_a),
        account(port_b)
    );
    // The snapshot B took is in its ledger, so its next restart starts from it.
    let (_f, restored) =
        LedgerFiles::open(&ledger_b, config(), genesis.hash).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(restored.snapshot.is_some_and(|s| s.slot() >= snap_slot));
}
