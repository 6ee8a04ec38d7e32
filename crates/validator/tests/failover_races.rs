//! The restart cycle and the races of failover, with real processes and a real etcd over
//! mutual TLS (issue 5, items 5 and 8): a restarted primary reclaims (after catching up,
//! or at once with `--reclaim-immediately`) and the secondary exits, then comes back under
//! its own identity; several machines run `set-identity` at once; `set-identity` while
//! etcd is frozen; the primary SIGKILLed at random moments and in the middle of a tower
//! store; etcd's leader member killed during a failover. Each ends with the auditor over
//! every ledger involved, and with the vote account voting again.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use faults::*;
use huione_keys::Keypair;
use huione_testkit::EtcdCluster;

fn pubkey_of(node: &Node) -> String {
    Keypair::read_file(&node.identity_file)
        .unwrap()
        .pubkey()
        .to_string()
}

/// `None` while running, `Some(code)` once exited (reaped here).
fn exit_status(node: &mut Node) -> Option<Option<i32>> {
    match node.child.as_mut() {
        None => Some(None),
        Some(c) => match c.try_wait() {
            Ok(Some(st)) => {
                node.child = None;
                Some(st.code())
            }
            _ => None,
        },
    }
}

fn assert_stopped_as_duplicate(code: Option<i32>, node: &Node) {
    assert!(
        matches!(code, Some(3) | Some(4)),
        "{} must stop with exit code 3 (lock lost) or 4 (duplicate instance), got {code:?}:\n{}",
        node.name,
        tail(&node.log(), 30)
    );
}

/// Waits until the pair's vote account votes at least `n` slots past its current last vote.
fn assert_votes_again(c: &Cluster, n: u64, what: &str, logs: &[&Node]) -> Duration {
    let vote = vote_account(c);
    let t = Instant::now();
    let lv = last_vote_of(&c.nodes[0], &vote).unwrap();
    let ok = wait_vote_past(&c.nodes[0], &vote, lv + n, Duration::from_secs(40));
    let logs: String = logs
        .iter()
        .map(|n| format!("---- {} ----\n{}\n", n.name, tail(&n.log(), 25)))
        .collect();
    assert!(
        ok.is_some(),
        "the vote account did not vote again ({what}):\n{logs}"
    );
    t.elapsed()
}

/// Longest time between two consecutive votes of the vote account at or after `t_ms`.
fn longest_vote_gap(records: &[huione_core::audit::AuditRecord], vote: &str, t_ms: u64) -> u64 {
    let votes = pair_votes_since(records, vote, t_ms);
    votes
        .windows(2)
        .map(|w| w[1].time_ms - w[0].time_ms)
        .max()
        .unwrap_or(0)
}

/// Item 5: planned failover, restart of the primary (it reclaims), exit of the secondary,
/// restart of the secondary under its own identity.
fn restart_cycle(reclaim_immediately: bool) {
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, mut standby) = pair_cluster(&etcd, &[]);
    let outsider = Outsider::connect(&etcd);
    let (id, vote) = (primary_identity(&c), vote_account(&c));
    let standby_id = pubkey_of(&standby);
    c.start_all();
    standby.start();
    wait_voting(&c, Duration::from_secs(60));

    // Planned failover.
    let out = set_identity(&standby.ledger, &c.nodes[PAIR].identity_file, false);
    assert!(out.status.success(), "{}", out_text(&out));
    let code = c.nodes[PAIR].wait_exit(Duration::from_secs(15));
    assert_stopped_as_duplicate(code, &c.nodes[PAIR]);
    assert_votes_again(&c, 5, "after the failover", &[&standby]);

    // The primary restarts with the same flags (plus the option, in that variant), a
    // little later, so that it has something to catch up.
    std::thread::sleep(Duration::from_millis(2000));
    if reclaim_immediately {
        c.nodes[PAIR].args.push("--reclaim-immediately".into());
    }
    let t_restart = now_ms();
    c.nodes[PAIR].start();
    let code = standby.wait_exit(Duration::from_secs(60));
    let standby_exit_ms = now_ms() - t_restart;
    assert_stopped_as_duplicate(code, &standby);
    let plog = c.nodes[PAIR].log();
    let waited = plog.contains("reclaiming once caught up");
    assert_eq!(
        waited,
        !reclaim_immediately,
        "catch-up wait before the reclaim: {}",
        tail(&plog, 30)
    );
    let holder = outsider.holder(&id).unwrap();
    assert_eq!(holder.owner.pid, c.nodes[PAIR].pid(), "{holder:?}");
    assert_eq!(
        holder.owner.reason,
        if reclaim_immediately {
            "startup"
        } else {
            "reclaim"
        }
    );
    let resumed = assert_votes_again(&c, 5, "after the reclaim", &[&c.nodes[PAIR]]);
    assert_eq!(identity_of(&c.nodes[PAIR]).unwrap(), id.to_string());

    // The secondary restarts with its own identity: no vote for the primary's account.
    let t_secondary = now_ms();
    standby.start();
    let up = wait_for(Duration::from_secs(30), || {
        (standby.slot("processed")? > c.nodes[0].slot("processed")?.saturating_sub(8)).then_some(())
    });
    assert!(up.is_some(), "secondary:\n{}", tail(&standby.log(), 30));
    assert_eq!(identity_of(&standby).unwrap(), standby_id);
    assert_votes_again(&c, 10, "with both machines up", &[&c.nodes[PAIR], &standby]);
    assert!(exit_status(&mut standby).is_none(), "{}", standby.log());
    assert!(exit_status(&mut c.nodes[PAIR]).is_none());
    let after = votes_in(&standby.ledger)
        .into_iter()
        .filter(|v| v.time_ms >= t_secondary)
        .count();
    assert_eq!(after, 0, "the restarted secondary cast {after} votes");
    assert_eq!(outsider.holder(&id).unwrap().revision, holder.revision);

    let records = assert_audit_clean(&c, &[&standby]);
    let restarted_log = c.nodes[PAIR].log();
    let from = restarted_log.rfind("starting huione-validator").unwrap();
    for line in restarted_log[from..].lines().filter(|l| {
        ["ledger loaded", "reclaim", "took the identity", "caught up"]
            .iter()
            .any(|k| l.contains(k))
    }) {
        eprintln!("restarted primary: {line}");
    }
    let last_by_secondary = votes_in(&standby.ledger)
        .iter()
        .map(|v| v.time_ms)
        .filter(|t| *t < t_secondary)
        .max()
        .unwrap();
    let first_by_primary = votes_in(&c.nodes[PAIR].ledger)
        .iter()
        .map(|v| v.time_ms)
        .filter(|t| *t >= t_restart)
        .min()
        .unwrap();
    eprintln!(
        "restart cycle (reclaim immediately: {reclaim_immediately}): secondary exited ({code:?}) {standby_exit_ms} ms \
         after the primary restarted; its last vote {} ms after the restart, the restarted primary's first \
         vote {} ms after it (handover gap {} ms); primary voting again within {} ms of the secondary's exit; \
         longest gap between the vote account's votes from the restart on: {} ms",
        last_by_secondary as i64 - t_restart as i64,
        first_by_primary - t_restart,
        first_by_primary as i64 - last_by_secondary as i64,
        resumed.as_millis(),
        longest_vote_gap(&records, &vote, t_restart)
    );
}

#[test]
fn restart_cycle_primary_reclaims_once_caught_up() {
    let _serial = serial();
    restart_cycle(false);
}

#[test]
fn restart_cycle_with_reclaim_immediately() {
    let _serial = serial();
    restart_cycle(true);
}

/// Item 8: three processes run `set-identity` for the identity at the same moment: the
/// primary itself and two standbys. Exactly one ends up voting; the others stop.
#[test]
fn set_identity_on_several_machines_at_once() {
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, mut a) = pair_cluster(&etcd, &[]);
    let mut b = c.standby_spec("secondary-b", PAIR, &etcd.validator_flags(), true);
    let outsider = Outsider::connect(&etcd);
    let id = primary_identity(&c).to_string();
    c.start_all();
    a.start();
    b.start();
    wait_voting(&c, Duration::from_secs(60));
    let ready = wait_for(Duration::from_secs(30), || {
        let top = c.nodes[0].slot("processed")?;
        (a.slot("processed")? + 8 > top && b.slot("processed")? + 8 > top).then_some(())
    });
    assert!(ready.is_some(), "standbys did not catch up");

    let key = c.nodes[PAIR].identity_file.clone();
    let t0 = Instant::now();
    let racers: Vec<(String, Child)> = [&c.nodes[PAIR], &a, &b]
        .iter()
        .map(|n| (n.name.clone(), spawn_set_identity(&n.ledger, &key)))
        .collect();
    for (name, child) in racers {
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "set-identity on {name} after {:?}: {}",
            t0.elapsed(),
            out_text(&out).replace('\n', " | ")
        );
    }

    // Exactly one process keeps the identity, the lock holder; every other one that took
    // it stops (one that lost the lock first finishes the leader slots it had claimed, so
    // for a slot or two it may still be the only one showing the identity).
    let mut codes: HashMap<String, Option<i32>> = HashMap::new();
    let pair_identity = primary_identity(&c);
    let settled = wait_for(Duration::from_secs(20), || {
        let mut voters = Vec::new();
        for n in [&mut c.nodes[PAIR], &mut a, &mut b] {
            match exit_status(n) {
                None if identity_of(n).as_deref() == Some(&id) => voters.push(n.name.clone()),
                None => {}
                Some(code) => {
                    codes.entry(n.name.clone()).or_insert(code);
                }
            }
        }
        let holder = outsider.holder(&pair_identity)?.owner.pid;
        let is_holder = [&c.nodes[PAIR], &a, &b]
            .into_iter()
            .any(|n| voters.first() == Some(&n.name) && n.child.is_some() && n.pid() == holder);
        (voters.len() == 1 && is_holder).then_some(voters)
    });
    let winner =
        settled.unwrap_or_else(|| panic!("not exactly one voter:\n{}", c.logs()))[0].clone();
    let winner_node = [&c.nodes[PAIR], &a, &b]
        .into_iter()
        .find(|n| n.name == winner)
        .unwrap();
    let holder = outsider.holder(&primary_identity(&c)).unwrap();
    assert_eq!(holder.owner.pid, winner_node.pid());
    assert_votes_again(&c, 5, "after the race", &[&c.nodes[PAIR], &a, &b]);
    // A second look: still one voter; the others stopped with 3/4 or kept their own
    // identity (a refused set-identity).
    for n in [&mut c.nodes[PAIR], &mut a, &mut b] {
        if let Some(code) = exit_status(n) {
            codes.entry(n.name.clone()).or_insert(code);
        }
        match codes.get(&n.name) {
            Some(code) => {
                assert_ne!(n.name, winner);
                assert_stopped_as_duplicate(*code, n);
            }
            None if n.name == winner => {}
            None => assert_ne!(identity_of(n).as_deref(), Some(id.as_str()), "{}", n.name),
        }
    }
    eprintln!(
        "race of three set-identity calls: {winner} votes (lock revision {}, {} acquires in the history); exit codes {codes:?}",
        holder.revision,
        outsider.history(&primary_identity(&c)).len()
    );
    assert_audit_clean(&c, &[&a, &b]);
}

/// Item 8: `set-identity` while etcd is down (killed) or frozen fails cleanly (nothing
/// changes, the primary resumes once etcd is back); started while frozen and thawed within the call's deadline, it
/// succeeds, and voting moves over.
#[test]
fn set_identity_while_etcd_is_down_or_frozen() {
    let _serial = serial();
    let mut etcd = EtcdCluster::start(1).unwrap();
    let (mut c, mut standby) = pair_cluster(&etcd, &[]);
    let outsider = Outsider::connect(&etcd);
    let id = primary_identity(&c);
    let standby_id = pubkey_of(&standby);
    c.start_all();
    standby.start();
    wait_voting(&c, Duration::from_secs(60));
    let key = c.nodes[PAIR].identity_file.clone();

    // 0. etcd down (killed) for the whole call: it fails and changes nothing.
    etcd.kill(0);
    let t = Instant::now();
    let out = set_identity(&standby.ledger, &key, false);
    let took = t.elapsed();
    let still = identity_of(&standby);
    etcd.restart(0).unwrap();
    let text = out_text(&out);
    eprintln!(
        "set-identity with etcd down: {took:?}: {}",
        text.replace('\n', " | ")
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("unavailable"), "unclear message: {text}");
    assert_eq!(still.unwrap(), standby_id);
    assert!(exit_status(&mut c.nodes[PAIR]).is_none());
    let resumed = assert_votes_again(&c, 3, "after etcd's restart", &[&c.nodes[PAIR], &standby]);
    eprintln!(
        "primary voting again {} ms after etcd came back",
        resumed.as_millis()
    );
    assert_eq!(outsider.holder(&id).unwrap().owner.pid, c.nodes[PAIR].pid());

    // 1. Frozen for the whole call: it fails and changes nothing.
    etcd.freeze(0);
    let t = Instant::now();
    let out = set_identity(&standby.ledger, &key, false);
    let took = t.elapsed();
    let still = identity_of(&standby);
    etcd.thaw(0);
    let text = out_text(&out);
    eprintln!(
        "set-identity with etcd frozen: {took:?}: {}",
        text.replace('\n', " | ")
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("unavailable"), "unclear message: {text}");
    assert_eq!(still.unwrap(), standby_id);
    assert!(exit_status(&mut c.nodes[PAIR]).is_none());
    let resumed = assert_votes_again(&c, 3, "after the thaw", &[&c.nodes[PAIR], &standby]);
    eprintln!(
        "primary voting again {} ms after the thaw",
        resumed.as_millis()
    );
    let holder = outsider.holder(&id).unwrap();
    assert_eq!(holder.owner.pid, c.nodes[PAIR].pid());
    assert_eq!(identity_of(&standby).unwrap(), standby_id);

    // 2. Frozen when the call starts, thawed one second later.
    etcd.freeze(0);
    let t = Instant::now();
    let child = spawn_set_identity(&standby.ledger, &key);
    std::thread::sleep(Duration::from_millis(1000));
    etcd.thaw(0);
    let out = child.wait_with_output().unwrap();
    let took = t.elapsed();
    let text = out_text(&out);
    eprintln!(
        "set-identity with etcd thawed 1 s into the call: {took:?}: {}",
        text.replace('\n', " | ")
    );
    if !out.status.success() {
        // Failing cleanly is allowed; then it must work once etcd answers again.
        assert!(text.contains("unavailable"), "unclear message: {text}");
        let out = set_identity(&standby.ledger, &key, false);
        assert!(out.status.success(), "{}", out_text(&out));
    }
    let code = c.nodes[PAIR].wait_exit(Duration::from_secs(15));
    assert_stopped_as_duplicate(code, &c.nodes[PAIR]);
    assert_eq!(identity_of(&standby).unwrap(), id.to_string());
    assert_votes_again(&c, 5, "after the failover", &[&standby]);
    assert_audit_clean(&c, &[&standby]);
}

/// Item 8: the primary SIGKILLed again and again: at random moments while it votes, and
/// in the middle of a tower store (etcd frozen with the store in flight, the primary
/// killed, etcd thawed: the store may still be applied after the process died). Each
/// restarted primary reclaims and votes; nothing is voted twice.
#[test]
fn primary_killed_repeatedly_while_storing() {
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, _standby) = pair_cluster(&etcd, &[]);
    let outsider = Outsider::connect(&etcd);
    let id = primary_identity(&c);
    c.start_all();
    wait_voting(&c, Duration::from_secs(60));
    let mut rng = Rng::from_env_or_time();
    let mut back_ms = Vec::new();
    for round in 0..4 {
        let mid_store = round % 2 == 1;
        if mid_store {
            etcd.freeze(0);
            std::thread::sleep(Duration::from_millis(150 + rng.below(200)));
            c.nodes[PAIR].kill9();
            etcd.thaw(0);
        } else {
            std::thread::sleep(Duration::from_millis(rng.below(400)));
            c.nodes[PAIR].kill9();
        }
        let before = votes_in(&c.nodes[PAIR].ledger).len();
        let t = Instant::now();
        c.nodes[PAIR].start();
        let back = wait_for(Duration::from_secs(40), || {
            (votes_in(&c.nodes[PAIR].ledger).len() > before + 3).then_some(())
        });
        assert!(
            back.is_some(),
            "round {round}: the restarted primary did not vote:\n{}",
            tail(&c.nodes[PAIR].log(), 30)
        );
        back_ms.push(t.elapsed().as_millis());
        eprintln!(
            "round {round}: killed {} ; voting again {} ms after the restart",
            if mid_store {
                "with a store in flight (etcd frozen)"
            } else {
                "at a random moment"
            },
            t.elapsed().as_millis()
        );
    }
    assert_votes_again(&c, 5, "after the last restart", &[&c.nodes[PAIR]]);
    let holder = outsider.holder(&id).unwrap();
    assert_eq!(holder.owner.pid, c.nodes[PAIR].pid());
    eprintln!(
        "4 SIGKILLs of the primary; restart -> voting again: {back_ms:?} ms; {} lock acquires in the history",
        outsider.history(&id).len()
    );
    assert_audit_clean(&c, &[]);
}

/// Item 8: a 3-member etcd whose raft leader is killed just before `set-identity`.
#[test]
fn etcd_leader_killed_during_a_failover() {
    let _serial = serial();
    let mut etcd = EtcdCluster::start(3).unwrap();
    let (mut c, mut standby) = pair_cluster(&etcd, &[]);
    let id = primary_identity(&c);
    c.start_all();
    standby.start();
    wait_voting(&c, Duration::from_secs(60));
    let leader = etcd.wait_for_leader(Duration::from_secs(10)).unwrap();

    let t0 = Instant::now();
    etcd.kill(leader);
    let out = set_identity(&standby.ledger, &c.nodes[PAIR].identity_file, false);
    let took = t0.elapsed();
    let text = out_text(&out);
    eprintln!(
        "etcd leader (member {leader}) killed; set-identity returned after {took:?}: {}",
        text.replace('\n', " | ")
    );
    if !out.status.success() {
        assert!(text.contains("unavailable"), "unclear message: {text}");
        etcd.wait_for_leader(Duration::from_secs(10)).unwrap();
        let out = set_identity(&standby.ledger, &c.nodes[PAIR].identity_file, false);
        assert!(out.status.success(), "{}", out_text(&out));
    }
    let code = c.nodes[PAIR].wait_exit(Duration::from_secs(15));
    let exit_ms = t0.elapsed().as_millis();
    assert_stopped_as_duplicate(code, &c.nodes[PAIR]);
    assert_eq!(identity_of(&standby).unwrap(), id.to_string());
    let voting = assert_votes_again(&c, 5, "after the failover", &[&standby]);
    eprintln!(
        "primary exited ({code:?}) {exit_ms} ms after the leader was killed; standby voting within {} ms after that",
        voting.as_millis()
    );

    // The member comes back; the pair keeps voting.
    etcd.restart(leader).unwrap();
    assert_votes_again(&c, 5, "after the member came back", &[&standby]);
    let outsider = Outsider::connect(&etcd);
    assert_eq!(outsider.holder(&id).unwrap().owner.pid, standby.pid());
    assert_audit_clean(&c, &[&standby]);
}
