//! Issue 11, item 3 (no half-finished takeover) on real processes: a `set-identity` whose
//! acquire goes unanswered — etcd frozen with SIGSTOP as soon as the standby sends it, and
//! resumed after the storage deadline — must end by itself with exactly one voter, the
//! lock holder, and the lock history must say that the standby's takeover finished or
//! was released. The auditor checks every ledger involved.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use common::*;
use faults::*;
use huione_testkit::EtcdCluster;
use huione_tower_storage::LockEvent;

#[test]
fn a_set_identity_whose_acquire_is_unanswered_ends_with_one_voter() {
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, mut standby) = pair_cluster(&etcd, &[]);
    let outsider = Outsider::connect(&etcd);
    let id = primary_identity(&c);
    c.start_all();
    standby.start();
    wait_voting(&c, Duration::from_secs(60));
    let caught_up = wait_for(Duration::from_secs(30), || {
        let top = c.nodes[0].slot("processed")?;
        (standby.slot("processed")? + 8 > top).then_some(())
    });
    assert!(caught_up.is_some(), "the standby did not catch up");

    let key = c.nodes[PAIR].identity_file.clone();
    let log_path = standby.ledger.with_extension("log");
    let mut log = std::fs::File::open(&log_path).unwrap();
    log.seek(SeekFrom::End(0)).unwrap();
    let t0 = Instant::now();
    let child = spawn_set_identity(&standby.ledger, &key);
    // Freeze etcd the moment the standby says it sends its acquire (reading only what the
    // log gained, in a tight loop): the acquire then reaches etcd, or its answer leaves
    // it, while nobody can answer. On a loaded machine it may also land just before.
    let mut gained = String::new();
    let mut sent = None;
    while t0.elapsed() < Duration::from_secs(10) {
        let mut more = String::new();
        log.read_to_string(&mut more).unwrap();
        gained.push_str(&more);
        if gained.contains("acquire sent") {
            sent = Some(());
            break;
        }
        std::thread::yield_now();
    }
    etcd.freeze(0);
    assert!(sent.is_some(), "no acquire sent:\n{}", standby.log());
    std::thread::sleep(Duration::from_millis(6_000));
    etcd.thaw(0);
    let out = child.wait_with_output().unwrap();
    let text = out_text(&out);
    eprintln!(
        "set-identity with etcd frozen at the acquire: {:?}: {}",
        t0.elapsed(),
        text.replace('\n', " | ")
    );

    // The standby's takeover ends by itself: switched, or the lock given up.
    let ended = wait_for(Duration::from_secs(30), || {
        let log = standby.log();
        (log.contains("took the identity") || log.contains("did not finish")).then_some(())
    });
    assert!(
        ended.is_some(),
        "the standby's takeover did not end:\n{}",
        tail(&standby.log(), 30)
    );
    // Exactly one process runs the identity, and it is the lock holder.
    let settled = wait_for(Duration::from_secs(30), || {
        let holder = outsider.holder(&id)?;
        let running: Vec<&Node> = [&c.nodes[PAIR], &standby]
            .into_iter()
            .filter(|n| n.child.is_some())
            .collect();
        let voters: Vec<&&Node> = running
            .iter()
            .filter(|n| identity_of(n).as_deref() == Some(&id.to_string()))
            .collect();
        let one = voters.len() == 1 && holder.is_held() && voters[0].pid() == holder.owner.pid;
        one.then(|| voters[0].name.clone())
    });
    let logs = format!(
        "---- standby ----\n{}\n---- primary ----\n{}",
        tail(&standby.log(), 30),
        tail(&c.nodes[PAIR].log(), 15)
    );
    let winner =
        settled.unwrap_or_else(|| panic!("not exactly one voter holding the lock:\n{logs}"));
    // The standby's takeover ended, and the history says how.
    let history = outsider.history(&id);
    let mine: Vec<LockEvent> = history
        .iter()
        .filter(|r| r.owner.pid == standby.pid())
        .map(|r| r.owner.event)
        .collect();
    eprintln!("winner {winner}; the standby's lock records: {mine:?}");
    let standby_log = standby.log();
    for line in standby_log.lines().filter(|l| {
        l.contains("acquire")
            || l.contains("took the identity")
            || l.contains("released")
            || l.contains("lock")
            || l.contains("takeover")
    }) {
        eprintln!("  standby: {}", line.chars().take(300).collect::<String>());
    }
    if mine.contains(&LockEvent::Acquired) {
        assert!(
            mine.contains(&LockEvent::Finished) || mine.contains(&LockEvent::Released),
            "the standby acquired but its takeover neither finished nor released: {history:?}\n{logs}"
        );
    }
    // An unanswered acquire is never left: the standby adopts it or acquires again, and
    // switches (the primary is alive, so nothing makes it give the lock up).
    if text.contains("may still have been applied") {
        assert_eq!(winner, standby.name, "{logs}");
    }
    if winner == standby.name {
        assert!(mine.contains(&LockEvent::Finished), "{history:?}");
    }
    assert_votes_again_after(&c, &[&c.nodes[PAIR], &standby]);
    assert_audit_clean(&c, &[&standby]);
}

/// The pair's vote account votes 3 slots past its last vote within 40 s.
fn assert_votes_again_after(c: &Cluster, logs: &[&Node]) {
    let vote = vote_account(c);
    let lv = last_vote_of(&c.nodes[0], &vote).unwrap();
    let ok = wait_vote_past(&c.nodes[0], &vote, lv + 3, Duration::from_secs(40));
    let logs: String = logs
        .iter()
        .map(|n| format!("---- {} ----\n{}\n", n.name, tail(&n.log(), 25)))
        .collect();
    assert!(ok.is_some(), "the vote account did not vote again:\n{logs}");
}
