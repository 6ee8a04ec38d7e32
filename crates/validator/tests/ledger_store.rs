//! The ledger directory's formats: snapshots, the block segment store, pruning, and the
//! audit log's rotation and torn lines. Fast: files in a temp dir, no processes except
//! `huione-audit` once.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use huione_core::audit::{AuditRecord, VoteRecord};
use huione_core::{
    Core, CoreConfig, Ed25519Verifier, Genesis, GenesisValidator, Hash, MAX_ROOTED_BLOCKS,
};
use huione_keys::{Keypair, Pubkey};
use huione_validator::ledger::audit_log::{self, AuditLog, ReadError};
use huione_validator::ledger::generate::ChainGen;
use huione_validator::ledger::{snapshots, Damage, LedgerConfig, LedgerFiles};

const SLOT_MS: u64 = 100;

struct Chain {
    genesis: Genesis,
    id: Keypair,
    vote_account: Pubkey,
}

fn chain() -> Chain {
    let id = Keypair::from_secret(&[7; 32]);
    let vote_account = Pubkey::from_seed_byte(70);
    let genesis = Genesis::new(
        vec![GenesisValidator {
            identity: id.pubkey(),
            vote_account,
            authorized_voter: id.pubkey(),
            stake: 10,
        }],
        SLOT_MS,
        64,
        0,
    )
    .unwrap();
    Chain {
        genesis,
        id,
        vote_account,
    }
}

impl Chain {
    fn gen(&self) -> ChainGen {
        ChainGen::new(self.genesis.clone(), self.id.clone(), self.vote_account)
    }
    fn core(&self, ledger: Option<huione_core::Ledger>, now_ms: u64) -> Core {
        let cfg = CoreConfig::new(
            &self.genesis,
            self.vote_account,
            vec![self.id.clone()],
            "test".into(),
        );
        Core::new(
            Arc::new(self.genesis.clone()),
            cfg,
            self.id.clone(),
            Arc::new(Ed25519Verifier),
            ledger,
            now_ms,
        )
    }
}

fn small_config() -> LedgerConfig {
    LedgerConfig {
        limit_ledger_slots: MAX_ROOTED_BLOCKS,
        snapshot_interval_slots: 64,
        snapshots_to_keep: 3,
        segment_max_bytes: 16 * 1024,
        audit_segment_max_bytes: 2048,
        audit_segments_kept: 3,
    }
}

fn flip_byte(path: &Path, from_end: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() - from_end;
    bytes[i] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn snapshot_round_trip_keeps_every_account_field_and_the_rooted_chain() {
    let c = chain();
    let mut g = c.gen();
    for _ in 0..200 {
        g.next_block();
    }
    let bank = g.root_bank().expect("rooted after 200 votes").clone();
    assert!(bank.slot > 100, "root {}", bank.slot);
    let bytes = snapshots::encode(c.genesis.hash, &bank, g.rooted_chain()).unwrap();
    let back = snapshots::decode(&bytes, c.genesis.hash).unwrap();
    assert_eq!(back.bank.slot, bank.slot);
    assert_eq!(back.bank.hash, bank.hash);
    let a: Vec<_> = bank.accounts().collect();
    let b: Vec<_> = back.bank.accounts().collect();
    assert_eq!(a, b);
    let account = back.bank.account(&c.vote_account).unwrap();
    assert!(account.credits > 0 && account.lockouts.votes().len() == 31);
    assert_eq!(&back.rooted_chain, g.rooted_chain());
    // Another genesis's ledger refuses it.
    let err = snapshots::decode(&bytes, Hash([9; 32])).unwrap_err();
    assert!(format!("{err:#}").contains("genesis"), "{err:#}");
}

#[test]
fn restart_loads_the_newest_snapshot_and_replays_only_the_tail() {
    let c = chain();
    let dir = tempfile::tempdir().unwrap();
    let (mut files, restored) =
        LedgerFiles::open(dir.path(), small_config(), c.genesis.hash).unwrap();
    assert!(restored.snapshot.is_none() && restored.blocks.is_empty());
    let mut g = c.gen();
    let slots = 1500;
    g.write(&mut files, slots, 50).unwrap();
    drop(files);
    let now = c.genesis.slot_start_ms(slots + 1);

    let (_files, restored) = LedgerFiles::open(dir.path(), small_config(), c.genesis.hash).unwrap();
    let snap = restored.snapshot.as_ref().expect("a snapshot was written");
    let snap_slot = snap.slot();
    assert!(
        snap_slot + 64 + 50 >= g.root().unwrap(),
        "snapshot {snap_slot}"
    );
    assert!(restored.damage.is_empty() && restored.rejected_snapshots.is_empty());
    assert!(restored.blocks.first().unwrap().slot >= snap_slot.saturating_sub(MAX_ROOTED_BLOCKS));
    let restarted = c.core(restored.into_core_ledger(&c.genesis), now);
    // Only blocks above the snapshot were replayed, not the chain from genesis.
    let replayed = restarted.stats().blocks_replayed;
    assert_eq!(replayed, slots - snap_slot, "replayed {replayed}");

    // The same state as a node that replayed everything from genesis.
    let mut full = c.core(None, now);
    let mut g2 = c.gen();
    for _ in 0..slots {
        full.on_block(now, g2.next_block());
    }
    assert_eq!(full.stats().blocks_replayed, slots);
    assert_eq!(restarted.status().best_slot, slots);
    assert_eq!(restarted.status().best_slot, full.status().best_slot);
    assert_eq!(restarted.status().root, full.status().root);
    let tip_a: Vec<_> = restarted.bank(slots).unwrap().accounts().collect();
    let tip_b: Vec<_> = full.bank(slots).unwrap().accounts().collect();
    assert_eq!(tip_a, tip_b);
}

#[test]
fn a_corrupt_or_truncated_snapshot_is_reported_and_the_previous_one_used() {
    let c = chain();
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = LedgerFiles::open(dir.path(), small_config(), c.genesis.hash).unwrap();
    c.gen().write(&mut files, 400, 64).unwrap();
    let list = files.snapshots().list();
    assert_eq!(list.len(), 3, "{list:?}");
    drop(files);
    let (newest, middle, oldest) = (list[0].clone(), list[1].clone(), list[2].clone());

    flip_byte(&newest.1, 10);
    let len = std::fs::metadata(&middle.1).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&middle.1)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (_f, restored) = LedgerFiles::open(dir.path(), small_config(), c.genesis.hash).unwrap();
    assert_eq!(restored.snapshot.as_ref().unwrap().slot(), oldest.0);
    let rejected = &restored.rejected_snapshots;
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0].file, newest.1);
    assert!(rejected[0].reason.contains("checksum"), "{rejected:?}");
    assert_eq!(rejected[1].file, middle.1);
    assert!(rejected[1].reason.contains("truncated"), "{rejected:?}");
    // The blocks after the older snapshot are still there, so the restart replays them.
    let now = c.genesis.slot_start_ms(401);
    let core = c.core(restored.into_core_ledger(&c.genesis), now);
    assert_eq!(core.status().best_slot, 400);

    // None verifies: start from genesis (never from a damaged state).
    flip_byte(&oldest.1, 3);
    let (_f, restored) = LedgerFiles::open(dir.path(), small_config(), c.genesis.hash).unwrap();
    assert!(restored.snapshot.is_none());
    assert_eq!(restored.rejected_snapshots.len(), 3);
    let ledger = restored.into_core_ledger(&c.genesis).unwrap();
    assert_eq!(ledger.root_bank.slot, 0);
    assert_eq!(ledger.root_bank.hash, c.genesis.hash);
}

#[test]
fn a_torn_or_corrupt_block_segment_is_detected_with_its_file_name() {
    let c = chain();
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = LedgerFiles::open(dir.path(), small_config(), c.genesis.hash).unwrap();
    c.gen().write(&mut files, 300, 10).unwrap();
    let stored = files.block_store().len();
    assert_eq!(stored, 300);
    assert!(files.block_store().segment_count() > 2);
    drop(files);
    let blocks_dir = dir.path().join("blocks");
    let mut segs: Vec<_> = std::fs::read_dir(&blocks_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let open_seg = segs.last().unwrap().clone();
    assert!(
        !open_seg.with_extension("idx").exists(),
        "the last segment is open"
    );

    // A crash in the middle of an append: a partial record at the end.
    let mut bytes = std::fs::read(&open_seg).unwrap();
    let good_len = bytes.len() as u64;
    bytes.extend_from_slice(&[200, 1, 0, 0, 9, 9, 9]);
    std::fs::write(&open_seg, &bytes).unwrap();
    let (files, restored) = LedgerFiles::open(dir.path(), small_config(), c.genesis.hash).unwrap();
    assert_eq!(
        restored.damage,
        vec![Damage::TornTail {
            file: open_seg.clone(),
            offset: good_len
        }]
    );
    assert!(restored.damage[0]
        .to_string()
        .contains(&open_seg.display().to_string()));
    assert_eq!(std::fs::metadata(&open_seg).unwrap().len(), good_len);
    assert_eq!(files.block_store().len(), 300);
    // Appending after a restart goes to the end of the open segment, and reads back.
    let mut files = files;
    let mut g = c.gen();
    let more: Vec<_> = (0..310).map(|_| g.next_block()).collect();
    files.persist(more[295..].iter()).unwrap();
    files.sync_blocks().unwrap();
    drop(files);
    let (files, restored) = LedgerFiles::open(dir.path(), small_config(), c.genesis.hash).unwrap();
    assert!(restored.damage.is_empty(), "{:?}", restored.damage);
    assert_eq!(files.block_store().len(), 310);
    assert_eq!(files.block_store().read_from(0).unwrap(), more);
    drop(files);

    // A flipped byte inside a sealed segment whose index is lost: found by the rescan,
    // and nothing from the damaged record on is used.
    let sealed = segs[0].clone();
    flip_byte(&sealed, 5);
    std::fs::remove_file(sealed.with_extension("idx")).unwrap();
    let (files, restored) = LedgerFiles::open(dir.path(), small_config(), c.genesis.hash).unwrap();
    assert!(
        restored
            .damage
            .iter()
            .any(|d| matches!(d, Damage::BadRecord { file, .. } if *file == sealed)),
        "{:?}",
        restored.damage
    );
    assert!(restored.damage.contains(&Damage::IndexRebuilt {
        file: sealed.with_extension("idx")
    }));
    let left = files.block_store().len();
    assert_eq!(left, 309, "only the damaged record is lost");
    // Every block read back is intact (its hash and signature check out).
    let blocks = files.block_store().read_from(0).unwrap();
    assert_eq!(blocks.len(), 309);
    let leader = c.id.pubkey();
    for b in &blocks {
        b.check_integrity(&leader, &Ed25519Verifier).unwrap();
    }
    drop(files);

    // A flipped byte in a sealed segment with a good index: the read checks it again.
    let sealed2 = segs[1].clone();
    flip_byte(&sealed2, 5);
    let (files, _) = LedgerFiles::open(dir.path(), small_config(), c.genesis.hash).unwrap();
    let blocks = files.block_store().read_from(0).unwrap();
    assert_eq!(blocks.len(), 308);
    for b in &blocks {
        b.check_integrity(&leader, &Ed25519Verifier).unwrap();
    }
}

#[test]
fn pruning_keeps_disk_bounded_by_the_retention_and_the_oldest_snapshot() {
    let c = chain();
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let (mut files, _) = LedgerFiles::open(dir.path(), cfg.clone(), c.genesis.hash).unwrap();
    let mut g = c.gen();
    let per_segment = 16 * 1024 / 250 + 1;
    for round in 0..8 {
        g.write(&mut files, 1000, 64).unwrap();
        let (lo, hi) = files.block_store().slot_range().unwrap();
        assert_eq!(hi, g.tip().slot);
        // The last prune ran at the newest snapshot: it kept the retention below that
        // root, and everything a fallback to the oldest snapshot needs.
        let newest = files.snapshots().list()[0].0;
        let oldest = files.snapshots().oldest_slot().unwrap();
        let bound = newest
            .saturating_sub(cfg.limit_ledger_slots)
            .min(oldest.saturating_sub(MAX_ROOTED_BLOCKS));
        if round > 0 {
            assert!(lo <= bound, "pruned too much: lowest {lo}, bound {bound}");
            assert!(
                lo + per_segment >= bound,
                "not pruned: lowest {lo}, bound {bound}"
            );
        }
        assert!(files.snapshots().list().len() <= cfg.snapshots_to_keep);
        let kept = files.block_store().len() as u64;
        assert_eq!(kept, hi - lo + 1, "contiguous");
        assert!(
            kept <= cfg.limit_ledger_slots + 4 * 64 + 2 * per_segment,
            "{kept} blocks kept"
        );
    }
    // What is on disk is what the store counts (deleted segments are gone).
    let on_disk: u64 = std::fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, files.block_store().disk_bytes());
    // The flag check names the flag.
    let bad = LedgerConfig {
        limit_ledger_slots: 10,
        ..LedgerConfig::default()
    };
    let err = LedgerFiles::open(dir.path(), bad, c.genesis.hash)
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("--limit-ledger-slots"),
        "{err:#}"
    );
}

fn vote(slot: u64) -> AuditRecord {
    AuditRecord::Vote(VoteRecord {
        vote_account: Pubkey::from_seed_byte(2),
        slot,
        hash: Hash([slot as u8; 32]),
        node: Pubkey::from_seed_byte(1),
        instance: "test-instance".into(),
        time_ms: slot * 100,
    })
}

fn slots_of(records: &[AuditRecord]) -> Vec<u64> {
    records
        .iter()
        .map(|r| match r {
            AuditRecord::Vote(v) => v.slot,
            AuditRecord::Block(b) => b.slot,
        })
        .collect()
}

#[test]
fn the_audit_log_rotates_by_size_and_a_torn_last_line_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path(), 2048, 3).unwrap();
    for slot in 1..=100 {
        log.append(&vote(slot)).unwrap();
        log.sync().unwrap();
    }
    let rotated = audit_log::rotated_segments(dir.path());
    assert_eq!(rotated.len(), 3, "{rotated:?}");
    let seqs: Vec<u64> = rotated.iter().map(|(s, _)| *s).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(seqs[0] > 1, "the oldest segments were deleted: {seqs:?}");
    for (_, p) in &rotated {
        assert!(std::fs::metadata(p).unwrap().len() < 2048 + 300);
    }
    // Read in order: rotated segments, then the current one; no gaps, ending at 100.
    let slots = slots_of(&audit_log::read_records(dir.path()).unwrap());
    assert_eq!(*slots.last().unwrap(), 100);
    assert!(slots.windows(2).all(|w| w[1] == w[0] + 1), "{slots:?}");
    drop(log);

    // A crash in the middle of a write leaves a torn last line.
    let current = dir.path().join("audit.jsonl");
    let lines = std::fs::read_to_string(&current).unwrap().lines().count();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&current)
        .unwrap();
    std::io::Write::write_all(&mut f, br#"{"kind":"vote","vote_acc"#).unwrap();
    drop(f);
    let err = audit_log::read_records(dir.path()).unwrap_err();
    match &err {
        ReadError::TornLastLine { file, line, .. } => {
            assert_eq!(file, &current);
            assert_eq!(*line, lines + 1);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("audit.jsonl line"), "{err}");

    // huione-audit reports it, with the file and line, and fails.
    std::fs::write(
        dir.path().join("genesis.json"),
        serde_json::to_vec(&chain().genesis).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huione-audit"))
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{} line {}", current.display(), lines + 1))
            && stderr.contains("torn last line"),
        "{stderr}"
    );

    // The node cuts it off at its next start (its vote was never sent); then it reads.
    let log = AuditLog::open(dir.path(), 2048, 3).unwrap();
    drop(log);
    let slots = slots_of(&audit_log::read_records(dir.path()).unwrap());
    assert_eq!(*slots.last().unwrap(), 100);

    // A damaged line in the middle is an error naming the file and line too.
    let first = rotated_first(dir.path());
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(&first, text.replacen("\"slot\"", "\"sl0t\"", 1)).unwrap();
    let err = audit_log::read_records(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ReadError::BadLine { file, line: 1, .. } if *file == first),
        "{err}"
    );
}

fn rotated_first(dir: &Path) -> std::path::PathBuf {
    audit_log::rotated_segments(dir)[0].1.clone()
}

#[test]
fn an_empty_rooted_chain_is_filled_with_the_snapshot_slot() {
    // A snapshot of a bank with no rooted history still roots its own slot.
    let c = chain();
    let mut g = c.gen();
    for _ in 0..100 {
        g.next_block();
    }
    let bank = g.root_bank().unwrap().clone();
    let bytes = snapshots::encode(c.genesis.hash, &bank, &BTreeSet::new()).unwrap();
    let back = snapshots::decode(&bytes, c.genesis.hash).unwrap();
    assert_eq!(back.rooted_chain, BTreeSet::from([bank.slot]));
}

#[test]
fn blocks_of_the_old_one_file_per_block_layout_are_moved_into_segments() {
    let c = chain();
    let dir = tempfile::tempdir().unwrap();
    let blocks_dir = dir.path().join("blocks");
    std::fs::create_dir_all(&blocks_dir).unwrap();
    let mut g = c.gen();
    let blocks: Vec<_> = (0..40).map(|_| g.next_block()).collect();
    for b in &blocks {
        let bytes = huione_net::encode(&huione_net::Message::Block(b.clone())).unwrap();
        std::fs::write(blocks_dir.join(format!("{:012}.bin", b.slot)), bytes).unwrap();
    }
    std::fs::write(blocks_dir.join("000000000999.bin"), b"not a block").unwrap();
    let (files, restored) = LedgerFiles::open(dir.path(), small_config(), c.genesis.hash).unwrap();
    assert_eq!(restored.blocks, blocks);
    assert_eq!(files.block_store().len(), 40);
    let left: Vec<_> = std::fs::read_dir(&blocks_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
