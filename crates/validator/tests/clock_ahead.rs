//! A primary whose wall clock runs two slots ahead (`faketime`), taken over inside its
//! own leader window, with real processes and a real etcd over mutual TLS.
//!
//! Before the leader claim was stored in the tower, the taker's floor came from its own
//! clock, and such a primary could produce a slot the new holder also produced (a
//! duplicate block, PRODUCT.md invariant 4). Both cases check, from every ledger: no
//! slot has blocks from two instances, the auditor finds nothing, the old primary exits
//! (code 3 or 4) and the standby leads a later window of the identity.
//!
//! * `guarded`: default settings. The primary measures its offset from other leaders'
//!   blocks, warns, and stops leading.
//! * `behind`: the primary's clock runs five slots *behind*. It measures that from the
//!   other leaders' blocks, accepts them although they look "from the future", keeps
//!   voting, and does not lead its own slots.
//! * `unguarded_frozen`: the clock guard switched off (`--max-clock-offset-ms` huge), the
//!   primary frozen just before its window, taken over, and resumed three seconds later
//!   (the sequence): safety rests on the stored claim alone.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::time::Duration;

use common::*;
use faults::*;
use huione_testkit::EtcdCluster;

const AHEAD_SLOTS: u64 = 2;

/// Runs the pair's primary under libfaketime, its wall clock `offset_ms` off (positive:
/// ahead). Preloaded through `env` (which execs the validator) rather than the `faketime`
/// wrapper, which forks: the test's process handle is then the validator itself, so a
/// failing test still stops it.
fn run_primary_with_clock_off(c: &mut Cluster, offset_ms: i64) {
    let lib = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .map(|d| std::path::Path::new(d).join("faketime/libfaketime.so.1"))
    .find(|p| p.is_file())
    .expect(
        "libfaketime.so.1 is not installed: scripts/deps.sh installs it \
             (apt-get install -y faketime)",
    );
    let node = &mut c.nodes[PAIR];
    let offset = format!("{:+}s", offset_ms as f64 / 1000.0);
    let mut args = vec![
        format!("LD_PRELOAD={}", lib.display()),
        format!("FAKETIME={offset}"),
        // Only the wall clock runs ahead; timers keep the real monotonic clock.
        "FAKETIME_DONT_FAKE_MONOTONIC=1".to_string(),
        node.bin.display().to_string(),
    ];
    args.append(&mut node.args);
    node.bin = "/usr/bin/env".into();
    node.args = args;
}

fn takeover_with_clock_ahead(guarded: bool) {
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let extra: &[&str] = if guarded {
        &[]
    } else {
        &["--max-clock-offset-ms", "100000"]
    };
    let (mut c, mut standby) = pair_cluster(&etcd, extra);
    run_primary_with_clock_off(&mut c, (AHEAD_SLOTS * SLOT_MS) as i64);
    c.start_all();
    standby.start();
    wait_voting(&c, Duration::from_secs(40));
    let g = c.genesis.clone();
    let id = primary_identity(&c).to_string();
    // Let the primary see a few windows of other leaders (its clock measurement).
    std::thread::sleep(Duration::from_millis(30 * SLOT_MS));

    if guarded {
        // The estimate needs enough of other leaders' blocks; on a busy machine that can
        // take longer than the 30 slots above.
        let offset = huione_testkit::nodes::wait_for(Duration::from_secs(30), || {
            metric(&c.nodes[PAIR], "huione_clock_offset_ms").filter(|o| *o >= SLOT_MS as f64)
        });
        assert!(
            offset.is_some(),
            "the primary's huione_clock_offset_ms never showed its clock {AHEAD_SLOTS} slots \
             ahead: last {:?}",
            metric(&c.nodes[PAIR], "huione_clock_offset_ms")
        );
        // A measured offset says so (0 ms alone could also mean "not measured yet").
        assert_eq!(
            metric(&c.nodes[PAIR], "huione_clock_offset_known"),
            Some(1.0),
            "huione_clock_offset_known is not 1 while the offset is measured"
        );
    }
    let window = next_window(&c, 3 + AHEAD_SLOTS);
    // By true time, one slot before the window (by the primary's clock, one slot into it).
    let at = g.slot_start_ms(window) - SLOT_MS;
    std::thread::sleep(Duration::from_millis(at.saturating_sub(now_ms())));
    if !guarded {
        c.nodes[PAIR].signal(libc::SIGSTOP);
    }
    let out = set_identity(&standby.ledger, &c.nodes[PAIR].identity_file, false);
    assert!(
        out.status.success(),
        "set-identity failed: {}\n{}",
        out_text(&out),
        standby.log()
    );
    if !guarded {
        std::thread::sleep(Duration::from_secs(3));
        c.nodes[PAIR].signal(libc::SIGCONT);
    }
    let code = c.nodes[PAIR].wait_exit(Duration::from_secs(10));
    assert!(
        matches!(code, Some(3 | 4)),
        "the old primary did not stop with code 3 or 4: {code:?}\n{}",
        c.nodes[PAIR].log()
    );
    if guarded {
        assert!(
            c.nodes[PAIR].log().contains("clock runs"),
            "the primary never warned about its clock:\n{}",
            c.nodes[PAIR].log()
        );
    }
    wait_standby_leads_a_later_window(&c, &standby, &id);
    let recs = audit_records(&[c.nodes[PAIR].ledger.as_path(), standby.ledger.as_path()]);
    let twice: Vec<_> = producers(&recs, &id)
        .into_iter()
        .filter(|(_, i)| i.len() > 1)
        .collect();
    assert!(twice.is_empty(), "slots led by two instances: {twice:?}");
    assert_audit_clean(&c, &[&standby]);
}

#[test]
fn a_primary_two_slots_ahead_measures_it_warns_and_is_taken_over_cleanly() {
    takeover_with_clock_ahead(true);
}

#[test]
fn a_primary_two_slots_ahead_frozen_and_resumed_after_a_takeover_never_leads_twice() {
    takeover_with_clock_ahead(false);
}

/// A primary whose clock was stepped five slots back used to drop every block as from the
/// future and send no vote until its clock was fixed (the nemesis saw a vote account go
/// ~52 s without a landed vote after a backwards step).
#[test]
fn a_primary_five_slots_behind_measures_it_and_keeps_voting() {
    const BEHIND_SLOTS: u64 = 5;
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, _standby) = pair_cluster(&etcd, &[]);
    run_primary_with_clock_off(&mut c, -((BEHIND_SLOTS * SLOT_MS) as i64));
    c.start_all();
    wait_voting(&c, Duration::from_secs(60));
    let offset = huione_testkit::nodes::wait_for(Duration::from_secs(30), || {
        metric(&c.nodes[PAIR], "huione_clock_offset_ms")
            .filter(|o| *o <= -(((BEHIND_SLOTS - 1) * SLOT_MS) as f64))
    });
    assert!(
        offset.is_some(),
        "the primary's huione_clock_offset_ms never showed its clock {BEHIND_SLOTS} slots \
         behind: last {:?}",
        metric(&c.nodes[PAIR], "huione_clock_offset_ms")
    );
    let measured_slot = c.nodes[0].slot("processed").expect("the cluster's slot");
    // Still voting, as the cluster sees it, well after the measurement.
    let vote = vote_account(&c);
    let now = last_vote_of(&c.nodes[0], &vote).expect("the pair's vote account");
    let later = wait_vote_past(&c.nodes[0], &vote, now + 20, Duration::from_secs(30));
    assert!(
        later.is_some(),
        "the primary stopped voting with its clock behind:\n{}",
        c.nodes[PAIR].log()
    );
    // Once measured, it does not lead with a clock that far off (a window it was already
    // producing may finish).
    let recs = audit_records(&[c.nodes[PAIR].ledger.as_path()]);
    let led: Vec<u64> = producers(&recs, &primary_identity(&c).to_string())
        .into_keys()
        .filter(|s| *s > measured_slot + 8)
        .collect();
    assert!(led.is_empty(), "led with its clock behind: slots {led:?}");
    assert_audit_clean(&c, &[]);
}
