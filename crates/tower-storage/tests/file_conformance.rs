//! The conformance suite against file storage, plus crash-safety tests.

use huione_keys::{Keypair, Pubkey};
use huione_tower::{SavedTower, Tower};
use huione_tower_storage::conformance::Fixture;
use huione_tower_storage::{FileTowerStorage, LockOwner, TowerStorage};

struct Files(tempfile::TempDir);

impl Fixture for Files {
    type Storage = FileTowerStorage;
    async fn open(&self) -> FileTowerStorage {
        FileTowerStorage::new(self.0.path()).unwrap()
    }
    async fn put_raw_tower(&self, identity: &Pubkey, bytes: &[u8]) {
        let s = FileTowerStorage::new(self.0.path()).unwrap();
        std::fs::write(s.tower_path(identity), bytes).unwrap();
    }
}

huione_tower_storage::conformance_tests!(Files(tempfile::tempdir().unwrap()));

fn saved(kp: &Keypair, upto: u64) -> SavedTower {
    let mut t = Tower::new(kp.pubkey());
    for s in 1..=upto {
        t.record_vote(s, [0; 32], s);
    }
    SavedTower::new(&t, kp).unwrap()
}

#[test]
fn file_name_follows_the_documented_layout() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileTowerStorage::new(dir.path()).unwrap();
    let kp = Keypair::from_secret(&[3; 32]);
    let lease = s
        .acquire_now(
            &kp.pubkey(),
            LockOwner::for_this_process(kp.pubkey(), "test"),
        )
        .unwrap();
    s.store_now(&lease, &saved(&kp, 3)).unwrap();
    let expected = dir.path().join(format!("tower-1-{}.bin", kp.pubkey()));
    assert!(expected.exists());
    assert_eq!(s.tower_path(&kp.pubkey()), expected);
    // no temporary files left behind
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn interrupted_write_leaves_the_old_tower() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileTowerStorage::new(dir.path()).unwrap();
    let kp = Keypair::from_secret(&[4; 32]);
    let lease = s
        .acquire_now(
            &kp.pubkey(),
            LockOwner::for_this_process(kp.pubkey(), "test"),
        )
        .unwrap();
    s.store_now(&lease, &saved(&kp, 5)).unwrap();
    // A crash after writing half of the temporary file and before the rename.
    let tmp = dir.path().join(format!(".tower-1-{}.bin.tmp", kp.pubkey()));
    let newer = saved(&kp, 6).to_bytes();
    std::fs::write(&tmp, &newer[..newer.len() / 2]).unwrap();
    let loaded = s
        .load_now(&kp.pubkey())
        .unwrap()
        .unwrap()
        .verify(&kp.pubkey())
        .unwrap();
    assert_eq!(loaded.last_voted_slot(), Some(5));
    // the next store replaces the stale temporary file
    s.store_now(&lease, &saved(&kp, 7)).unwrap();
    assert!(!tmp.exists());
}

#[cfg(unix)]
#[test]
fn failed_write_keeps_the_old_tower_and_is_transient() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = FileTowerStorage::new(dir.path()).unwrap();
    let kp = Keypair::from_secret(&[5; 32]);
    let lease = s
        .acquire_now(
            &kp.pubkey(),
            LockOwner::for_this_process(kp.pubkey(), "test"),
        )
        .unwrap();
    s.store_now(&lease, &saved(&kp, 2)).unwrap();
    // Make the temporary file impossible to create (as root too): a directory with its name.
    let tmp = dir.path().join(format!(".tower-1-{}.bin.tmp", kp.pubkey()));
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o500)).unwrap();
    let err = s.store_now(&lease, &saved(&kp, 3)).unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains(&kp.pubkey().to_string()), "{err}");
    let loaded = s
        .load_now(&kp.pubkey())
        .unwrap()
        .unwrap()
        .verify(&kp.pubkey())
        .unwrap();
    assert_eq!(loaded.last_voted_slot(), Some(2));
}

/// A child process stores towers in a loop; we SIGKILL it at varying moments and check
/// that what is on disk always verifies and never goes backwards.
#[cfg(unix)]
#[test]
fn kill_during_stores_never_tears_the_tower() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Keypair::from_secret(&[6; 32]);
    let exe = std::env::current_exe().unwrap();
    let mut last_seen = 0;
    for round in 0..6u64 {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "child_store_loop", "--ignored", "--nocapture"])
            .env("HUIONE_CHILD_DIR", dir.path())
            .env("HUIONE_CHILD_START", (last_seen + 1).to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150 + 37 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        let s = FileTowerStorage::new(dir.path()).unwrap();
        if let Some(saved) = s.load_now(&kp.pubkey()).unwrap() {
            let t = saved
                .verify(&kp.pubkey())
                .expect("the tower on disk always verifies");
            let slot = t.last_voted_slot().unwrap();
            assert!(
                slot >= last_seen,
                "tower went backwards: {slot} < {last_seen}"
            );
            last_seen = slot;
        }
    }
    assert!(last_seen > 0, "the child never stored a tower");
}

#[test]
#[ignore = "helper process for kill_during_stores_never_tears_the_tower"]
fn child_store_loop() {
    let Ok(dir) = std::env::var("HUIONE_CHILD_DIR") else {
        return;
    };
    let start: u64 = std::env::var("HUIONE_CHILD_START")
        .unwrap()
        .parse()
        .unwrap();
    let kp = Keypair::from_secret(&[6; 32]);
    let s = FileTowerStorage::new(dir).unwrap();
    let lease = s
        .acquire_now(
            &kp.pubkey(),
            LockOwner::for_this_process(kp.pubkey(), "child"),
        )
        .unwrap();
    let mut t = Tower::new(kp.pubkey());
    for slot in start.. {
        t.record_vote(slot, [0; 32], slot);
        s.store_now(&lease, &SavedTower::new(&t, &kp).unwrap())
            .unwrap();
    }
}

#[tokio::test]
async fn history_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Keypair::from_secret(&[8; 32]);
    {
        let s = FileTowerStorage::new(dir.path()).unwrap();
        for _ in 0..3 {
            s.acquire(&kp.pubkey(), LockOwner::for_this_process(kp.pubkey(), "t"))
                .await
                .unwrap();
        }
    }
    let s = FileTowerStorage::new(dir.path()).unwrap();
    let h = s.history(&kp.pubkey()).await.unwrap();
    assert_eq!(
        h.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}
