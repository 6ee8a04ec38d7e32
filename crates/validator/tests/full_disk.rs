//! A full disk under the ledger (a small tmpfs this test mounts, as root; it fails, never
//! skips, without root): an append that runs out of space fails with the file's name and
//! leaves no partial record behind, so once space is freed the next appends read back
//! whole. Without the cut, the audit log would hold a line glued to a partial one (the
//! whole log unreadable as proof) and the block store a record at the wrong offset.
//!
//! And a real primary (tower in a real etcd over mutual TLS) whose ledger fills up: a
//! node that cannot record does not vote. Before that rule it kept deciding votes on its
//! own blocks, which it could not record and so did not send, and stored them in etcd: a
//! private fork whose lockouts the standby taking over inherited and had to wait out.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use faults::*;
use huione_testkit::EtcdCluster;
use serde_json::json;

use huione_core::audit::{AuditRecord, VoteRecord};
use huione_core::{Genesis, GenesisValidator, Hash};
use huione_keys::{Keypair, Pubkey};
use huione_validator::ledger::audit_log::{self, AuditLog};
use huione_validator::ledger::blockstore::BlockStore;
use huione_validator::ledger::generate::ChainGen;

/// A tmpfs of `kb` KiB mounted on a directory; unmounted on drop (lazily: a process
/// that still has files open on it does not keep it mounted).
struct Tmpfs {
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// On a new temp dir.
    fn mount(kb: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tmpfs::mount_on(dir.path().to_path_buf(), kb);
        t._dir = Some(dir);
        t
    }

    /// On `path` (created if missing).
    fn mount_on(path: PathBuf, kb: u64) -> Tmpfs {
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kb}k"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed (this test needs root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path, _dir: None }
    }

    fn path(&self) -> &Path {
        &self.path
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
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
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

/// A primary restarted on a full ledger disk (as `Restart=always` does) while its standby
/// holds the identity does not reclaim it — it could not vote for it — and says so at
/// start; once the disk is freed it reclaims as usual and the standby steps down.
#[test]
fn a_primary_restarted_on_a_full_disk_reclaims_only_once_it_is_freed() {
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, mut standby) = pair_cluster(&etcd, &[]);
    let disk = Tmpfs::mount_on(c.nodes[PAIR].ledger.clone(), 8 * 1024);
    c.start_all();
    standby.start();
    wait_voting(&c, Duration::from_secs(60));
    let id = primary_identity(&c);
    let key = c.nodes[PAIR].identity_file.clone();
    let towers = Outsider::connect(&etcd);

    // The primary dies; the standby takes over.
    c.nodes[PAIR].kill9();
    let out = set_identity(&standby.ledger, &key, false);
    assert!(out.status.success(), "set-identity: {}", out_text(&out));
    let taken = towers.last_vote(&id).unwrap_or(0);
    assert!(
        wait_for(Duration::from_secs(20), || towers
            .last_vote(&id)
            .filter(|s| *s > taken))
        .is_some(),
        "the standby did not vote as the primary:\n{}",
        tail(&standby.log(), 30)
    );

    // Restarted on a full disk: it sees the disk at start and does not reclaim.
    let filler = disk.fill();
    c.nodes[PAIR].start();
    let ledger = c.nodes[PAIR].ledger.display().to_string();
    let health = wait_for(Duration::from_secs(20), || {
        let h = c.nodes[PAIR].rpc("getHealth", json!([]))?;
        let msg = h["error"]["message"].as_str()?.to_string();
        msg.contains("cannot record").then_some(msg)
    });
    assert!(
        health.as_ref().is_some_and(|h| h.contains(&ledger)),
        "getHealth of the restarted primary: {health:?}\n{}",
        tail(&c.nodes[PAIR].log(), 30)
    );
    // A primary on a healthy disk reclaims within a few seconds of catching up.
    std::thread::sleep(Duration::from_secs(6));
    let holder = towers.holder(&id).expect("the lock is held");
    assert_eq!(
        holder.owner.pid,
        standby.pid(),
        "the restarted primary reclaimed on a full disk:\n{}",
        tail(&c.nodes[PAIR].log(), 30)
    );
    assert!(standby.wait_exit(Duration::from_millis(10)).is_none());

    // Freed: it reclaims, and the standby steps down.
    std::fs::remove_file(filler).unwrap();
    let code = standby.wait_exit(Duration::from_secs(60));
    assert!(
        matches!(code, Some(3 | 4)),
        "the standby did not step down after the primary's disk was freed: {code:?}\n{}",
        tail(&c.nodes[PAIR].log(), 30)
    );
    assert_eq!(
        towers.holder(&id).map(|h| h.owner.pid),
        Some(c.nodes[PAIR].pid())
    );
    let reclaimed = towers.last_vote(&id).unwrap_or(0);
    assert!(
        wait_for(Duration::from_secs(20), || towers
            .last_vote(&id)
            .filter(|s| *s > reclaimed))
        .is_some(),
        "the primary did not vote after reclaiming:\n{}",
        tail(&c.nodes[PAIR].log(), 30)
    );
    assert_audit_clean(&c, &[&standby]);
    for n in &mut c.nodes {
        n.kill9();
    }
}

/// A labelled Prometheus sample, e.g. `huione_votes_skipped_total{rule="unrecordable"}`.
fn labelled_metric(node: &Node, series: &str) -> Option<f64> {
    let body = http_get(node.rpc_port, "/metrics")?;
    body.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.trim().parse().ok())?
    })
}

/// A primary whose ledger disk fills up stops deciding votes — the tower it stores in
/// etcd (which a standby would load) gains no vote while the disk is full — and stops
/// producing blocks; getHealth says why (so a watchtower fails it over), the log says it
/// once; once space is back it records what it could not, votes again, and its votes land.
#[test]
fn a_primary_whose_ledger_is_full_stores_no_new_vote_and_votes_again_once_freed() {
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, _standby) = pair_cluster(&etcd, &[]);
    // 8 MiB: far more than the run writes, quick to fill.
    let disk = Tmpfs::mount_on(c.nodes[PAIR].ledger.clone(), 8 * 1024);
    c.start_all();
    wait_voting(&c, Duration::from_secs(60));
    let id = primary_identity(&c);
    let vote = vote_account(&c);
    let towers = Outsider::connect(&etcd);
    let primary = &c.nodes[PAIR];
    let ledger = primary.ledger.display().to_string();
    let stored_before = towers.last_vote(&id).expect("no tower stored in etcd");

    let filler = disk.fill();
    let filled = std::time::Instant::now();
    // It notices at its next vote or block (every slot or so).
    let health = wait_for(Duration::from_secs(10), || {
        let h = primary.rpc("getHealth", json!([]))?;
        let msg = h["error"]["message"].as_str()?.to_string();
        msg.contains("cannot record").then_some(msg)
    });
    let health = health.unwrap_or_else(|| {
        panic!(
            "getHealth never reported 'cannot record' with the ledger full:\n{}",
            tail(&primary.log(), 40)
        )
    });
    assert!(health.contains(&ledger), "names the ledger: {health}");
    let noticed_ms = filled.elapsed().as_millis();
    // A vote decided just before the node noticed may still be stored: let it settle,
    // then the stored tower must not move while the disk stays full.
    std::thread::sleep(Duration::from_millis(10 * SLOT_MS));
    let stored_full = towers.last_vote(&id).unwrap();
    let landed_full = last_vote_of(&c.nodes[0], &vote).unwrap();
    std::thread::sleep(Duration::from_millis(30 * SLOT_MS));
    let stored_later = towers.last_vote(&id).unwrap();
    assert_eq!(
        stored_later,
        stored_full,
        "the tower stored in etcd gained votes while the ledger was full:\n{}",
        tail(&primary.log(), 40)
    );
    assert_eq!(metric(primary, "huione_recording_failed"), Some(1.0));
    let skipped = labelled_metric(
        primary,
        r#"huione_votes_skipped_total{rule="unrecordable"}"#,
    );
    assert!(
        skipped.is_some_and(|n| n > 0.0),
        "huione_votes_skipped_total{{rule=\"unrecordable\"}} = {skipped:?}"
    );

    std::fs::remove_file(filler).unwrap();
    let freed = std::time::Instant::now();
    let resumed = wait_for(Duration::from_secs(30), || {
        towers.last_vote(&id).filter(|s| *s > stored_full)
    });
    let resumed = resumed.unwrap_or_else(|| {
        panic!(
            "the primary did not vote again once the disk was freed:\n{}",
            tail(&primary.log(), 40)
        )
    });
    eprintln!(
        "stored tower's last vote: {stored_before} before the fill, {stored_full} while full \
         (noticed {noticed_ms} ms after the fill; unchanged for {} ms), {resumed} {} ms after \
         the disk was freed",
        30 * SLOT_MS,
        freed.elapsed().as_millis()
    );
    assert!(
        wait_vote_past(&c.nodes[0], &vote, landed_full, Duration::from_secs(30)).is_some(),
        "the primary's votes did not land again after the disk was freed:\n{}",
        tail(&primary.log(), 40)
    );
    let healthy = wait_for(Duration::from_secs(10), || {
        (metric(primary, "huione_recording_failed") == Some(0.0)).then_some(())
    });
    assert!(healthy.is_some(), "huione_recording_failed stayed 1");
    let log = primary.log();
    assert_eq!(
        log.matches("cannot record votes and blocks in the ledger")
            .count(),
        1,
        "the full disk is logged once per episode:\n{}",
        tail(&log, 40)
    );
    // Blocks the store could not take are said with the episode (or at most once per
    // 10 s), not once per block per second (122 lines in this test before).
    let block_store_lines = log.lines().filter(|l| l.contains("to the ledger")).count();
    assert!(
        block_store_lines <= 2,
        "{block_store_lines} lines about blocks not written to the ledger:\n{}",
        tail(&log, 40)
    );
    assert!(
        log.contains("the ledger records again"),
        "the recovery is logged:\n{}",
        tail(&log, 40)
    );
    assert_audit_clean(&c, &[]);
    for n in &mut c.nodes {
        n.kill9();
    }
    drop(disk);
}
