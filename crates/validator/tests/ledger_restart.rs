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
