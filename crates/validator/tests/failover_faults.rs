//! Failover under etcd trouble, with real processes and a real etcd over mutual TLS
//! (issue 5, items 2 and 4): a frozen etcd makes the primary withhold votes without
//! hanging, and it votes again after the thaw; an outage over
//! `--tower-outage-exit-after-ms` ends it with code 5; a lost lock ends it with code 3 and
//! a clear message; `set-identity --require-tower` refuses when etcd holds no tower. Every
//! test ends with the auditor over every ledger involved.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::time::{Duration, Instant};

use common::*;
use faults::*;
use huione_keys::Keypair;
use huione_testkit::EtcdCluster;

/// Item 2 (a): SIGSTOP the only etcd member while the primary votes.
#[test]
fn frozen_etcd_withholds_votes_without_hanging_and_resumes_after_thaw() {
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, _standby) = pair_cluster(&etcd, &[]);
    c.start_all();
    wait_voting(&c, Duration::from_secs(60));
    let vote = vote_account(&c);
    let withheld_before = metric(&c.nodes[PAIR], "huione_votes_withheld_total").unwrap_or(0.0);

    etcd.freeze(0);
    let t_freeze = now_ms();
    std::thread::sleep(Duration::from_millis(1000));
    // `lastVote` comes from the root bank, so it trails the votes sent by the root
    // distance: while etcd is frozen it may still rise, but never past the last vote the
    // primary sent before the freeze.
    let frozen_vote = votes_in(&c.nodes[PAIR].ledger)
        .iter()
        .map(|v| v.slot)
        .max()
        .unwrap();
    let mut seen_lv = Vec::new();
    let slot_then = c.nodes[PAIR].slot("processed").unwrap();
    let (mut max_rpc, mut samples) = (Duration::ZERO, 0);
    let mut health = None;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for method in ["getHealth", "getSlot"] {
            let (r, took) = timed_rpc(&c.nodes[PAIR], method);
            let r = r.unwrap_or_else(|| panic!("{method} did not answer while etcd is frozen"));
            max_rpc = max_rpc.max(took);
            samples += 1;
            if method == "getHealth" {
                health = Some(r);
            }
        }
        let lv = last_vote_of(&c.nodes[0], &vote).unwrap();
        if seen_lv.last() != Some(&lv) {
            seen_lv.push(lv);
        }
        if lv > frozen_vote {
            let sent: Vec<(u64, i64)> = votes_in(&c.nodes[PAIR].ledger)
                .iter()
                .map(|v| (v.slot, v.time_ms as i64 - t_freeze as i64))
                .collect();
            panic!(
                "the vote account's last vote moved ({frozen_vote} -> {lv}) while etcd was frozen; \
                 votes sent by the primary (slot, ms after the freeze): {:?}\n{}",
                &sent[sent.len().saturating_sub(12)..],
                tail(&c.nodes[PAIR].log(), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let slot_now = c.nodes[PAIR].slot("processed").unwrap();
    let withheld = metric(&c.nodes[PAIR], "huione_votes_withheld_total").unwrap();
    eprintln!(
        "etcd frozen: {samples} RPC calls, slowest {max_rpc:?}; processed slot {slot_then} -> {slot_now}; \
         votes withheld {withheld_before} -> {withheld}; getHealth during the outage: {}; \
         lastVote seen by v0 during the outage {seen_lv:?} (last vote sent before it: {frozen_vote})",
        health.as_ref().unwrap()
    );
    assert!(
        max_rpc < Duration::from_secs(1),
        "RPC took {max_rpc:?} while etcd was frozen"
    );
    // Votes are withheld: getHealth says so (Solana's -32005 "Node is unhealthy").
    let h = health.as_ref().unwrap();
    assert_eq!(
        h["error"]["code"], -32005,
        "getHealth during the outage: {h}"
    );
    assert!(
        slot_now >= slot_then + 10,
        "the primary stopped replaying while etcd was frozen ({slot_then} -> {slot_now})"
    );
    assert!(
        withheld > withheld_before,
        "huione_votes_withheld_total did not grow: {withheld}"
    );
    assert!(
        c.nodes[PAIR].log().contains("vote withheld"),
        "no log line about the withheld vote:\n{}",
        tail(&c.nodes[PAIR].log(), 30)
    );
    assert!(c.nodes[PAIR].wait_exit(Duration::from_millis(1)).is_none());

    etcd.thaw(0);
    let t_thaw = now_ms();
    let resumed = wait_vote_past(&c.nodes[0], &vote, frozen_vote + 3, Duration::from_secs(30));
    assert!(
        resumed.is_some(),
        "the primary did not vote again after the thaw:\n{}",
        tail(&c.nodes[PAIR].log(), 40)
    );

    let records = assert_audit_clean(&c, &[]);
    let sent = votes_in(&c.nodes[PAIR].ledger);
    let during = sent
        .iter()
        .filter(|v| v.time_ms > t_freeze + 1000 && v.time_ms < t_thaw)
        .count();
    assert_eq!(
        during, 0,
        "the primary sent {during} votes while etcd was frozen"
    );
    let first_after = pair_votes_since(&records, &vote, t_thaw)
        .first()
        .map(|v| v.time_ms - t_thaw)
        .unwrap();
    eprintln!(
        "etcd frozen for {} ms; first vote {first_after} ms after the thaw",
        t_thaw - t_freeze
    );
}

/// Freezes etcd under a primary started with `--tower-outage-exit-after-ms LIMIT_MS`
/// and returns the ms from the freeze to its exit (asserting exit code 5, a clear
/// message, no vote sent during the outage, and a clean audit).
fn outage_exit_ms(limit_ms: u64) -> u64 {
    let etcd = EtcdCluster::start(1).unwrap();
    let limit = limit_ms.to_string();
    let (mut c, _standby) = pair_cluster(&etcd, &["--tower-outage-exit-after-ms", &limit]);
    c.start_all();
    wait_voting(&c, Duration::from_secs(60));

    etcd.freeze(0);
    let t_freeze = now_ms();
    let code = c.nodes[PAIR].wait_exit(Duration::from_secs(30));
    let exit_ms = now_ms() - t_freeze;
    etcd.thaw(0);
    let log = c.nodes[PAIR].log();
    assert_eq!(
        code,
        Some(5),
        "expected exit code 5 (storage outage):\n{}",
        tail(&log, 30)
    );
    assert!(
        log.contains("tower storage failed for") && log.contains("over the configured limit"),
        "no clear message:\n{}",
        tail(&log, 30)
    );
    eprintln!("etcd frozen -> primary exited with code 5 after {exit_ms} ms (limit {limit_ms} ms)");
    let sent = votes_in(&c.nodes[PAIR].ledger);
    assert_eq!(
        sent.iter().filter(|v| v.time_ms > t_freeze + 1000).count(),
        0,
        "votes sent while etcd was frozen"
    );
    assert_audit_clean(&c, &[]);
    exit_ms
}

/// Item 2 (b): with `--tower-outage-exit-after-ms 2000`, a frozen etcd ends the primary
/// with exit code 5.
#[test]
fn storage_outage_over_the_limit_exits_with_code_5() {
    let _serial = serial();
    outage_exit_ms(2000);
}

/// The limit should bound the time without a stored tower: exit about LIMIT after the
/// outage begins, not LIMIT after the first failed call's deadline, rounded up to the
/// next failed call (that bug measured ~6 s for a 2 s limit with a 3 s etcd deadline).
#[test]
fn storage_outage_exit_comes_about_the_limit_after_the_outage_began() {
    let _serial = serial();
    let exit_ms = outage_exit_ms(2000);
    assert!(
        exit_ms < 2000 + 1500,
        "exited {exit_ms} ms after etcd froze, limit 2000 ms"
    );
}

/// Item 2 (c): another process takes the tower lock; the primary's next fenced store
/// fails and it exits with code 3 and a clear message.
#[test]
fn lock_taken_by_another_process_stops_the_primary_with_code_3() {
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, _standby) = pair_cluster(&etcd, &[]);
    c.start_all();
    wait_voting(&c, Duration::from_secs(60));
    let id = primary_identity(&c);
    let outsider = Outsider::connect(&etcd);
    let before = outsider.holder(&id).expect("the primary holds the lock");
    assert_eq!(before.owner.pid, c.nodes[PAIR].pid());

    let t0 = now_ms();
    let lease = outsider.acquire(&id, "test: another process takes the lock");
    let t_acq = now_ms();
    let code = c.nodes[PAIR].wait_exit(Duration::from_secs(15));
    let exit_ms = now_ms() - t_acq;
    let log = c.nodes[PAIR].log();
    assert_eq!(
        code,
        Some(3),
        "expected exit code 3 (lock lost):\n{}",
        tail(&log, 30)
    );
    assert!(
        log.contains("lost the tower lock") && log.contains(&lease.revision().to_string()),
        "no clear message naming the new holder's revision:\n{}",
        tail(&log, 30)
    );
    let after = outsider.holder(&id).unwrap();
    assert_eq!(
        after.revision,
        lease.revision(),
        "the lock changed hands again"
    );
    let sent = votes_in(&c.nodes[PAIR].ledger);
    let late = sent.iter().filter(|v| v.time_ms > t_acq).count();
    assert!(
        sent.iter().all(|v| v.time_ms <= t_acq + 1000),
        "the primary sent votes long after losing the lock"
    );
    eprintln!(
        "lock taken (acquire took {} ms, revision {} -> {}) -> primary exited with code 3 after {exit_ms} ms; \
         {late} votes recorded after the acquire returned (stored before it)",
        t_acq - t0,
        before.revision,
        lease.revision()
    );
    assert_audit_clean(&c, &[]);
}

/// Item 4: `set-identity --require-tower` fails clearly when etcd holds no tower for the
/// identity (before the primary ever ran, and for a spare identity while it runs); the
/// standby keeps its identity, the lock is untouched, the primary keeps voting. Once the
/// primary's tower is stored, the same command moves voting to the standby.
#[test]
fn require_tower_fails_clearly_without_a_stored_tower() {
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, mut standby) = pair_cluster(&etcd, &[]);
    let outsider = Outsider::connect(&etcd);
    let id = primary_identity(&c);
    let vote = vote_account(&c);
    let standby_id = Keypair::read_file(&standby.identity_file)
        .unwrap()
        .pubkey()
        .to_string();
    c.nodes[0].start();
    c.nodes[1].start();
    standby.start();
    let following = wait_for(Duration::from_secs(60), || {
        (standby.slot("processed")? >= 15).then_some(())
    });
    assert!(
        following.is_some(),
        "standby:\n{}",
        tail(&standby.log(), 30)
    );

    // 1. The primary never ran: etcd holds nothing for its identity.
    let out = set_identity(&standby.ledger, &c.nodes[PAIR].identity_file, true);
    let text = out_text(&out);
    eprintln!("set-identity --require-tower (no tower stored):\n{text}");
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("no stored tower") && text.contains("--require-tower"),
        "unclear message: {text}"
    );
    assert_eq!(identity_of(&standby).unwrap(), standby_id);
    assert!(
        outsider.holder(&id).is_none(),
        "the refused command took the lock"
    );
    assert!(!outsider.has_tower(&id));

    // 2. The primary starts: nobody holds the lock, so it takes it at once.
    c.nodes[PAIR].start();
    wait_voting(&c, Duration::from_secs(60));
    let plog = c.nodes[PAIR].log();
    assert!(
        !plog.contains("reclaiming once caught up"),
        "{}",
        tail(&plog, 30)
    );
    let holder = outsider.holder(&id).unwrap();
    assert_eq!(holder.owner.pid, c.nodes[PAIR].pid());

    // 3. A spare identity that never stored a tower (and that the vote account does not
    // name), while the primary runs: refused, nothing taken.
    let spare = Keypair::generate().unwrap();
    let spare_file = c.path().join("spare-keypair.json");
    spare.write_file(&spare_file, false).unwrap();
    let out = set_identity(&standby.ledger, &spare_file, true);
    let text = out_text(&out);
    eprintln!("set-identity --require-tower (spare identity):\n{text}");
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&spare.pubkey().to_string())
            && (text.contains("no stored tower") || text.contains("not taking the lock")),
        "unclear message: {text}"
    );
    assert_eq!(identity_of(&standby).unwrap(), standby_id);
    assert!(outsider.holder(&spare.pubkey()).is_none());
    // The primary is unaffected: same lock, still running, still voting.
    assert_eq!(outsider.holder(&id).unwrap().revision, holder.revision);
    let lv = last_vote_of(&c.nodes[0], &vote).unwrap();
    assert!(
        wait_vote_past(&c.nodes[0], &vote, lv + 5, Duration::from_secs(20)).is_some(),
        "the primary stopped voting:\n{}",
        tail(&c.nodes[PAIR].log(), 30)
    );
    assert!(c.nodes[PAIR].wait_exit(Duration::from_millis(1)).is_none());
    assert_eq!(outsider.holder(&id).unwrap().revision, holder.revision);

    // 4. With the primary's tower stored, --require-tower loads it and takes over.
    let t0 = now_ms();
    let out = set_identity(&standby.ledger, &c.nodes[PAIR].identity_file, true);
    let text = out_text(&out);
    assert!(out.status.success(), "{text}\n{}", tail(&standby.log(), 30));
    assert!(text.contains("loaded"), "{text}");
    let code = c.nodes[PAIR].wait_exit(Duration::from_secs(15));
    assert!(
        matches!(code, Some(3) | Some(4)),
        "the primary must stop with 3 or 4, got {code:?}:\n{}",
        tail(&c.nodes[PAIR].log(), 30)
    );
    eprintln!(
        "--require-tower with a stored tower: primary exited ({code:?}) after {} ms",
        now_ms() - t0
    );
    let lv = last_vote_of(&c.nodes[0], &vote).unwrap();
    assert!(
        wait_vote_past(&c.nodes[0], &vote, lv + 5, Duration::from_secs(20)).is_some(),
        "the standby did not vote:\n{}",
        tail(&standby.log(), 30)
    );
    assert_audit_clean(&c, &[&standby]);
}
