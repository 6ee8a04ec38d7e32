//! A full disk under the ledger (a small tmpfs this test mounts, as root; it fails, never
//! skips, without root): an append that runs out of space fails with the file's name and
//! leaves no partial record behind, so once space is freed the next appends read back
//! whole. Without the cut, the audit log would hold a line glued to a partial one (the
//! whole log unreadable as proof) and the block store a record at the wrong offset.

use std::path::{Path, PathBuf};
use std::process::Command;

use huione_core::audit::{AuditRecord, VoteRecord};
use huione_core::{Genesis, GenesisValidator, Hash};
use huione_keys::{Keypair, Pubkey};
use huione_validator::ledger::audit_log::{self, AuditLog};
use huione_validator::ledger::blockstore::BlockStore;
use huione_validator::ledger::generate::ChainGen;

/// A tmpfs of `kb` KiB mounted on a new temp dir; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(kb: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kb}k"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed (this test needs root): {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Takes every free byte with a filler file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write(&chunk).is_ok_and(|n| n > 0) {}
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn vote(slot: u64) -> AuditRecord {
    AuditRecord::Vote(VoteRecord {
        vote_account: Pubkey::from_seed_byte(2),
        slot,
        hash: Hash([slot as u8; 32]),
        node: Pubkey::from_seed_byte(1),
        instance: "full-disk-test".into(),
        time_ms: slot * 100,
    })
}

#[test]
fn an_audit_append_on_a_full_disk_fails_by_name_and_leaves_no_partial_line() {
    let disk = Tmpfs::mount(64);
    let mut log = AuditLog::open(disk.path(), 64 << 20, 4).unwrap();
    let mut appended = Vec::new();
    for slot in 0..5 {
        log.append(&vote(slot)).unwrap();
        appended.push(slot);
    }
    log.sync().unwrap();
    let filler = disk.fill();
    // Records are ~250 bytes: within a few pages one of them runs out of space, most
    // likely part-way through.
    let mut failed = 0;
    for slot in 5..200 {
        match log.append(&vote(slot)) {
            Ok(()) => appended.push(slot),
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(
                    msg.contains(&log.path().display().to_string()) && msg.contains("space"),
                    "the error names the file and the cause: {msg}"
                );
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "the full disk refused no append");
    let read = audit_log::read_records(disk.path()).expect("no torn or glued line");
    assert_eq!(read.len(), appended.len());
    std::fs::remove_file(filler).unwrap();
    for slot in 200..210 {
        log.append(&vote(slot)).unwrap();
        appended.push(slot);
    }
    log.sync().unwrap();
    let read =
        audit_log::read_records(disk.path()).expect("the log reads whole after the disk is freed");
    let slots: Vec<u64> = read
        .iter()
        .map(|r| match r {
            AuditRecord::Vote(v) => v.slot,
            AuditRecord::Block(b) => b.slot,
        })
        .collect();
    assert_eq!(slots, appended);
}

#[test]
fn a_block_append_on_a_full_disk_leaves_the_store_readable() {
    let id = Keypair::from_secret(&[7; 32]);
    let vote_account = Pubkey::from_seed_byte(70);
    let genesis = Genesis::new(
        vec![GenesisValidator {
            identity: id.pubkey(),
            vote_account,
            authorized_voter: id.pubkey(),
            stake: 10,
        }],
        100,
        64,
        0,
    )
    .unwrap();
    let mut gen = ChainGen::new(genesis, id, vote_account);
    let disk = Tmpfs::mount(128);
    let (mut store, damage) = BlockStore::open(&disk.path().join("blocks"), 64 << 20).unwrap();
    assert!(damage.is_empty());
    let mut stored = Vec::new();
    for _ in 0..5 {
        let b = gen.next_block();
        assert!(store.append(&b).unwrap());
        stored.push(b.slot);
    }
    store.sync().unwrap();
    let filler = disk.fill();
    let mut failed = 0;
    for _ in 0..200 {
        let b = gen.next_block();
        match store.append(&b) {
            Ok(_) => stored.push(b.slot),
            Err(e) => {
                assert!(
                    format!("{e:#}").contains(".seg"),
                    "names the segment: {e:#}"
                );
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "the full disk refused no block");
    std::fs::remove_file(filler).unwrap();
    for _ in 0..5 {
        let b = gen.next_block();
        assert!(store.append(&b).unwrap());
        stored.push(b.slot);
    }
    store.sync().unwrap();
    let read: Vec<u64> = store.read_from(0).unwrap().iter().map(|b| b.slot).collect();
    assert_eq!(
        read, stored,
        "every stored block reads back from its offset"
    );
    drop(store);
    let (store, damage) = BlockStore::open(&disk.path().join("blocks"), 64 << 20).unwrap();
    assert!(damage.is_empty(), "reopened without damage: {damage:?}");
    let read: Vec<u64> = store.read_from(0).unwrap().iter().map(|b| b.slot).collect();
    assert_eq!(read, stored);
}
