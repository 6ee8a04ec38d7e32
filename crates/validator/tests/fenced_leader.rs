//! Fenced block production across a failover in the identity's own leader slots (issue
//! 5, item 9), with real processes and a real etcd over mutual TLS.
//!
//! The dangerous moment for "no slot led by two instances" is a failover just before or
//! inside the identity's leader window: the primary holds a leader claim covering the
//! window (renewed before it), so it may produce those slots without another store. The
//! tests force that moment:
//!
//! * `set-identity` on the standby half a slot into the window, the primary running (it
//!   may lead the next window slot before its next store finds the lock lost);
//! * the primary frozen (SIGSTOP) half a slot before the window, `set-identity` on the
//!   standby, and the primary resumed (SIGCONT) a quarter slot into the window, with its
//!   claim still valid: it may produce window slots before its next store finds the lock
//!   lost.
//!
//! Each checks, from every ledger's block records: no slot has a block from two instances;
//! the old primary produced nothing above `slot(fault) + F` (its claim); every block of
//! the standby is above every block of the old primary (its floor is the claim stored in
//! the tower); with the primary running, no slot of the window is skipped (the old
//! primary finishes its claimed slots while stepping down, the standby leads every later
//! one that starts once its switch is done);
//! the standby leads a later window of the identity; the old primary exited; and the
//! auditor finds nothing.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use faults::*;
use huione_core::audit::AuditRecord;
use huione_testkit::EtcdCluster;

/// The core's `leader_fence_slots` (F): a confirmed store issued in slot `i` covers
/// leader slots up to `i + F`; a taker leads only above the claim stored in the tower.
const F: u64 = 1;

fn instances_in(records: &[AuditRecord]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| match r {
            AuditRecord::Vote(v) => v.instance.clone(),
            AuditRecord::Block(b) => b.instance.clone(),
        })
        .collect()
}

fn failover_in_leader_window(freeze: bool) {
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, mut standby) = pair_cluster(&etcd, &[]);
    c.start_all();
    standby.start();
    wait_voting(&c, Duration::from_secs(40));
    let g = c.genesis.clone();
    let id = primary_identity(&c).to_string();

    // Frozen: half a slot before the identity's next window, resumed a quarter slot into
    // it. Running: set-identity half a slot into the window (after the primary led its
    // first slot).
    let window = next_window(&c, 3);
    let slot_ms = g.slot_duration_ms;
    let at = if freeze {
        g.slot_start_ms(window) - slot_ms / 2
    } else {
        g.slot_start_ms(window) + slot_ms / 2
    };
    std::thread::sleep(Duration::from_millis(at.saturating_sub(now_ms())));
    let t_fault = now_ms();
    if freeze {
        c.nodes[PAIR].signal(libc::SIGSTOP);
    }
    let t_take = now_ms();
    let out = set_identity(&standby.ledger, &c.nodes[PAIR].identity_file, false);
    assert!(
        out.status.success(),
        "set-identity failed: {}\n{}",
        out_text(&out),
        standby.log()
    );
    let t_done = now_ms();
    if freeze {
        let resume_at = g.slot_start_ms(window) + slot_ms / 4;
        std::thread::sleep(Duration::from_millis(resume_at.saturating_sub(now_ms())));
        c.nodes[PAIR].signal(libc::SIGCONT);
    }
    let t_resume = now_ms();
    eprintln!(
        "window {window}..{}: fault at slot {} (+{} ms), set-identity took {} ms, primary \
         running again in slot {}",
        window + 3,
        g.slot_at(t_fault),
        t_fault - g.slot_start_ms(g.slot_at(t_fault)),
        t_done - t_take,
        g.slot_at(t_resume)
    );
    let code = c.nodes[PAIR].wait_exit(Duration::from_secs(10));
    assert!(
        matches!(code, Some(3 | 4)),
        "the old primary did not stop with code 3 or 4: {code:?}\n{}",
        c.nodes[PAIR].log()
    );

    wait_standby_leads_a_later_window(&c, &standby, &id);

    let primary_recs = audit_records(&[c.nodes[PAIR].ledger.as_path()]);
    let standby_recs = audit_records(&[standby.ledger.as_path()]);
    let primary_instances = instances_in(&primary_recs);
    let standby_instances = instances_in(&standby_recs);
    assert!(primary_instances.is_disjoint(&standby_instances));
    let by_primary = producers(&primary_recs, &id);
    let by_standby = producers(&standby_recs, &id);
    let window_slots = window..window + 4;
    eprintln!(
        "identity's window {window_slots:?}: primary produced {:?}, standby produced {:?}; \
         standby's first identity block: slot {:?}",
        by_primary
            .keys()
            .filter(|s| window_slots.contains(s))
            .collect::<Vec<_>>(),
        by_standby
            .keys()
            .filter(|s| window_slots.contains(s))
            .collect::<Vec<_>>(),
        by_standby.keys().next()
    );
    // Old primary: within its claim (stores issued by the fault at the latest).
    let claim_end = g.slot_at(t_fault) + F;
    let late: Vec<_> = by_primary.keys().filter(|s| **s > claim_end).collect();
    assert!(
        late.is_empty(),
        "the old primary produced slots {late:?} beyond its claim (slot {claim_end})"
    );
    // Standby: above everything the old primary produced (its floor is the stored claim).
    let primary_last = by_primary.keys().next_back().copied().unwrap_or(0);
    let early: Vec<_> = by_standby.keys().filter(|s| **s <= primary_last).collect();
    assert!(
        early.is_empty(),
        "the standby produced slots {early:?} at or below the old primary's last block \
         (slot {primary_last})"
    );
    if !freeze {
        // A planned handover inside the window skips none of its slots: the old primary
        // finishes the slots it claimed, and the standby leads every later slot that
        // starts once its switch is done (set-identity returned). A slot that began while
        // the switch was still under way is a matter of speed, which the failover bench
        // measures at real slot lengths (planned-window: 0 skipped); at these 100 ms
        // slots a loaded machine can take longer than the slot and a half the standby has.
        let skipped: Vec<u64> = window_slots
            .clone()
            .filter(|s| !by_primary.contains_key(s) && !by_standby.contains_key(s))
            .collect();
        let owed: Vec<u64> = skipped
            .iter()
            .copied()
            .filter(|s| *s <= claim_end || g.slot_start_ms(*s) >= t_done)
            .collect();
        eprintln!(
            "window slots produced by nobody: {skipped:?} (the standby's switch was done \
             {} ms into slot {})",
            t_done - g.slot_start_ms(g.slot_at(t_done)),
            g.slot_at(t_done)
        );
        assert!(
            owed.is_empty(),
            "window slots {owed:?} were produced by nobody (the old primary claimed up to \
             slot {claim_end}; the standby's switch was done in slot {})",
            g.slot_at(t_done)
        );
    }
    // No slot produced by two instances of the identity.
    let mut all = by_primary.clone();
    for (slot, inst) in &by_standby {
        all.entry(*slot).or_default().extend(inst.iter().cloned());
    }
    let twice: Vec<_> = all.iter().filter(|(_, i)| i.len() > 1).collect();
    assert!(twice.is_empty(), "slots led by two instances: {twice:?}");
    assert_audit_clean(&c, &[&standby]);
}

#[test]
fn set_identity_inside_the_identitys_leader_window_leads_each_slot_once() {
    failover_in_leader_window(false);
}

#[test]
fn frozen_primary_resumed_inside_its_leader_window_after_a_failover_leads_each_slot_once() {
    failover_in_leader_window(true);
}
