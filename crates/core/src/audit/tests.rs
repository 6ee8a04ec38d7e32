//! Auditor cases: each violation kind, out-of-order records, partial logs, JSON lines.

use super::*;

fn h(n: u64) -> Hash {
    Hash::digest(&[&n.to_le_bytes()])
}

const GENESIS: Hash = Hash([7; 32]);

/// A chain of blocks: (slot, parent slot) with hash h(slot) and parent h(parent) (or
/// the genesis hash for parent 0).
fn blocks(chain: &[(Slot, Slot)]) -> Vec<AuditRecord> {
    chain
        .iter()
        .map(|&(slot, parent)| {
            AuditRecord::Block(BlockRecord {
                leader: Pubkey::from_seed_byte(1),
                slot,
                hash: h(slot),
                parent_slot: parent,
                parent_hash: if parent == 0 { GENESIS } else { h(parent) },
                instance: "leader".into(),
                time_ms: 0,
            })
        })
        .collect()
}

fn vote(slot: Slot, instance: &str) -> AuditRecord {
    vote_hash(slot, h(slot), instance)
}

fn vote_hash(slot: Slot, hash: Hash, instance: &str) -> AuditRecord {
    AuditRecord::Vote(VoteRecord {
        vote_account: Pubkey::from_seed_byte(9),
        slot,
        hash,
        node: Pubkey::from_seed_byte(1),
        instance: instance.into(),
        time_ms: 0,
    })
}

/// 0 - 1 - 2 - 3 - 4 - 6        and a fork 2 - 5 - 7
fn forked() -> Vec<AuditRecord> {
    blocks(&[(1, 0), (2, 1), (3, 2), (4, 3), (6, 4), (5, 2), (7, 5)])
}

fn audit(records: Vec<AuditRecord>) -> Auditor {
    let mut a = Auditor::new(GENESIS);
    for r in &records {
        a.record(r);
    }
    a
}

#[test]
fn clean_votes_on_one_fork_pass() {
    let mut r = forked();
    r.extend([
        vote(1, "a"),
        vote(2, "a"),
        vote(3, "a"),
        vote(4, "a"),
        vote(6, "a"),
    ]);
    let a = audit(r);
    assert_eq!(a.violations(), &[]);
    assert_eq!((a.votes_seen, a.unresolved_votes), (5, 0));
}

#[test]
fn same_slot_two_hashes_or_two_instances_is_a_double_vote() {
    let mut r = forked();
    r.extend([vote(3, "a"), vote_hash(3, h(99), "a")]);
    let a = audit(r);
    assert!(matches!(
        a.violations(),
        [Violation::DoubleVote { slot: 3, .. }]
    ));

    let mut r = forked();
    r.extend([vote(3, "primary"), vote(3, "standby")]);
    let a = audit(r);
    assert!(
        matches!(&a.violations()[0], Violation::DoubleVote { first_instance, second_instance, .. }
            if first_instance == "primary" && second_instance == "standby")
    );
    // The same instance logging the same vote twice is not a violation.
    let mut r = forked();
    r.extend([vote(3, "a"), vote(3, "a")]);
    assert_eq!(audit(r).violations(), &[]);
}

#[test]
fn switching_forks_inside_a_lockout_is_reported() {
    // Votes 3 and 4 (on the 3-4 fork); 4 locks until 6, 3 until 7 (count 2).
    // A vote on 5 (other fork) at slot 5 breaks both.
    let mut r = forked();
    r.extend([vote(1, "a"), vote(3, "a"), vote(4, "a"), vote(5, "b")]);
    let a = audit(r);
    match a.violations() {
        [Violation::LockoutViolation {
            slot: 5,
            locked_slot,
            locked_until,
            ..
        }] => {
            assert!(*locked_slot == 3 || *locked_slot == 4);
            assert!(*locked_until >= 5);
        }
        v => panic!("expected one lockout violation, got {v:?}"),
    }
}

#[test]
fn switching_after_the_lockout_expired_is_fine() {
    // One vote on 3 (locks until 5); voting 7 on the other fork is allowed.
    let mut r = forked();
    r.extend([vote(3, "a"), vote(7, "b")]);
    assert_eq!(audit(r).violations(), &[]);
}

#[test]
fn out_of_order_records_are_reaudited() {
    // Same as the lockout case, but the conflicting vote is logged first.
    let mut r = forked();
    r.extend([vote(5, "b"), vote(1, "a"), vote(3, "a"), vote(4, "a")]);
    let a = audit(r);
    assert_eq!(a.violations().len(), 1, "{:?}", a.violations());
    // Votes logged before their blocks resolve with audit_all.
    let mut r = vec![vote(1, "a"), vote(3, "a"), vote(4, "a"), vote(5, "b")];
    r.extend(forked());
    let a = Auditor::audit_all(GENESIS, &r);
    assert_eq!(a.violations().len(), 1);
}

#[test]
fn unknown_ancestry_is_counted_not_reported() {
    let r = vec![vote(1, "a"), vote(3, "a"), vote(5, "a")];
    let a = audit(r);
    assert_eq!(a.violations(), &[]);
    assert_eq!(a.unresolved_votes, 2, "the first vote needs no ancestry");
}

#[test]
fn duplicate_blocks_are_reported_per_leader_and_slot() {
    let mut r = forked();
    let mut dup = blocks(&[(4, 2)]);
    r.append(&mut dup.clone());
    // Same slot, same leader, different hash.
    if let AuditRecord::Block(b) = &mut dup[0] {
        b.hash = h(44);
        b.instance = "other".into();
    }
    r.append(&mut dup);
    let a = audit(r);
    assert!(matches!(
        a.violations(),
        [Violation::DuplicateBlock { slot: 4, .. }]
    ));
}

#[test]
fn json_lines_round_trip() {
    let mut r = forked();
    r.push(vote(3, "a"));
    let text: String = r
        .iter()
        .map(|x| serde_json::to_string(x).unwrap() + "\n")
        .collect();
    assert!(text.contains("\"kind\":\"vote\""));
    let back = Auditor::read_json_lines(text.as_bytes()).unwrap();
    assert_eq!(back, r);
    let err = Auditor::read_json_lines("\n{\"kind\":\"nope\"}\n".as_bytes()).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}
