//! Lockout rules, checked against the cases in Solana's vote program and consensus tests.

use super::*;

fn tower_with(slots: &[Slot]) -> Tower {
    let mut t = Tower::new(Pubkey::from_seed_byte(1));
    for &s in slots {
        t.record_vote(s, [0; 32], 0);
    }
    t
}

fn stack(t: &Tower) -> Vec<(Slot, u32)> {
    t.votes().map(|l| (l.slot, l.confirmation_count)).collect()
}

/// (votes cast in order, expected stack as (slot, confirmation count), expected root)
#[allow(clippy::type_complexity)]
const CASES: &[(&[Slot], &[(Slot, u32)], Option<Slot>)] = &[
    (&[], &[], None),
    (&[0], &[(0, 1)], None),
    (&[0, 1], &[(0, 2), (1, 1)], None),
    (&[0, 1, 2], &[(0, 3), (1, 2), (2, 1)], None),
    (&[0, 1, 2, 3], &[(0, 4), (1, 3), (2, 2), (3, 1)], None),
    // Vote 2 expires at slot 4 (2 + 2^1); the depth is unchanged, so nothing doubles.
    (&[0, 1, 2, 5], &[(0, 3), (1, 2), (5, 1)], None),
    // ...then the next vote deepens the stack and every vote doubles.
    (&[0, 1, 2, 5, 6], &[(0, 4), (1, 3), (5, 2), (6, 1)], None),
    // Votes 1..3 all expire by slot 10 (1 + 2^3 = 9 < 10).
    (&[0, 1, 2, 3, 10], &[(0, 4), (10, 1)], None),
    (&[0, 1, 2, 3, 10, 11], &[(0, 4), (10, 2), (11, 1)], None),
    // A vote on a slot not newer than the last vote is ignored.
    (&[0, 1, 1, 0], &[(0, 2), (1, 1)], None),
    // The last vote's lockout ends exactly at its last locked-out slot: 1 + 2 = 3 keeps it.
    (&[0, 1, 3], &[(0, 3), (1, 2), (3, 1)], None),
    (&[0, 1, 4], &[(0, 2), (4, 1)], None),
];

#[test]
fn lockout_stack_cases() {
    for (votes, expected, root) in CASES {
        let t = tower_with(votes);
        assert_eq!(stack(&t), expected.to_vec(), "votes {votes:?}");
        assert_eq!(t.root(), *root, "votes {votes:?}");
    }
}

#[test]
fn thirty_second_vote_roots_the_oldest() {
    let slots: Vec<Slot> = (0..MAX_LOCKOUT_HISTORY as Slot).collect();
    let mut t = tower_with(&slots);
    assert_eq!(t.votes().len(), MAX_LOCKOUT_HISTORY);
    assert_eq!(t.root(), None);
    assert_eq!(t.votes().next().unwrap().confirmation_count, 31);
    let out = t.record_vote(MAX_LOCKOUT_HISTORY as Slot, [0; 32], 0);
    assert_eq!(out, VoteOutcome::Recorded { new_root: Some(0) });
    assert_eq!(t.root(), Some(0));
    assert_eq!(t.votes().len(), MAX_LOCKOUT_HISTORY);
    assert_eq!(t.votes().next().unwrap().slot, 1);
    // A vote at or below the root is ignored.
    let mut t2 = t.clone();
    assert_eq!(t2.record_vote(0, [0; 32], 0), VoteOutcome::Ignored);
    assert_eq!(t2, t);
}

#[test]
fn lockout_is_two_to_the_confirmation_count() {
    for c in 1..10u32 {
        let l = Lockout {
            slot: 100,
            confirmation_count: c,
        };
        assert_eq!(l.lockout(), 1 << c);
        assert!(l.is_locked_out_at_slot(100 + (1 << c)));
        assert!(!l.is_locked_out_at_slot(101 + (1 << c)));
    }
}

/// (votes, candidate slot, ancestors of the candidate, locked out?)
#[allow(clippy::type_complexity)]
const LOCKED_OUT: &[(&[Slot], Slot, &[Slot], bool)] = &[
    (&[], 0, &[], false),
    (&[0], 1, &[0], false),
    // double vote / older slot
    (&[0, 1], 0, &[], true),
    (&[0, 1], 1, &[0], true),
    // sibling of the last vote while it is still locked
    (&[0, 1], 2, &[0], true),
    // the last vote (1, lockout 2) expired at 3: slot 4 on the fork of 0 is fine
    (&[0, 1], 4, &[0], false),
    // but 0 is locked until 4 (0 + 2^2): a fork without 0 at slot 4 is locked out
    (&[0, 1], 4, &[], true),
    // and from slot 5 on both votes have expired
    (&[0, 1], 5, &[], false),
    // a child of the last vote
    (&[0, 1, 2], 3, &[0, 1, 2], false),
    (&[0, 1, 2], 3, &[0, 2], true),
];

#[test]
fn is_locked_out_cases() {
    for (votes, slot, ancestors, expected) in LOCKED_OUT {
        let t = tower_with(votes);
        let got = t.is_locked_out(*slot, |s| ancestors.contains(&s));
        assert_eq!(
            got, *expected,
            "votes {votes:?} candidate {slot} ancestors {ancestors:?}"
        );
    }
}

#[test]
fn root_must_be_an_ancestor() {
    let slots: Vec<Slot> = (0..=MAX_LOCKOUT_HISTORY as Slot).collect();
    let t = tower_with(&slots);
    assert_eq!(t.root(), Some(0));
    let next = MAX_LOCKOUT_HISTORY as Slot + 1;
    let all: Vec<Slot> = (0..next).collect();
    assert!(!t.is_locked_out(next, |s| all.contains(&s)));
    // The simulated vote roots slot 1; a fork without it is locked out.
    assert!(t.is_locked_out(next, |s| s != 1 && all.contains(&s)));
    // A tower whose root is not on the fork at all (no deep votes above it).
    let mut rooted = tower_with(&slots);
    for s in [1000, 5000, 100_000] {
        rooted.record_vote(s, [0; 32], 0);
    }
    let r = rooted.root().unwrap();
    assert!(!rooted.is_locked_out(200_000, |s| s <= 100_000));
    assert!(rooted.is_locked_out(200_000, |s| s != r && s <= 100_000));
}

#[test]
fn threshold_check_uses_the_vote_at_depth_eight() {
    // 8 votes: the stack after a 9th vote is 9 deep, so the bottom one (slot 0) is checked.
    let t = tower_with(&(0..8).collect::<Vec<_>>());
    assert_eq!(t.threshold_lockout(8).map(|l| l.slot), Some(0));
    assert!(!t.check_vote_threshold(8, |_| 0, 100, 2, 3));
    assert!(!t.check_vote_threshold(8, |s| if s == 0 { 66 } else { 0 }, 100, 2, 3));
    assert!(t.check_vote_threshold(8, |s| if s == 0 { 67 } else { 0 }, 100, 2, 3));
    // A shallow stack needs no stake at all.
    let shallow = tower_with(&[0, 1, 2]);
    assert!(shallow.check_vote_threshold(3, |_| 0, 100, 2, 3));
    let empty = Tower::new(Pubkey::from_seed_byte(1));
    assert!(empty.check_vote_threshold(0, |_| 0, 100, 2, 3));
}

#[test]
fn threshold_needs_strictly_more_than_two_thirds() {
    // Agave: `fork_stake / total_stake > threshold_size`. Exactly 2/3 (two of three equal
    // stakes) does not pass; one unit more does.
    let t = tower_with(&(0..8).collect::<Vec<_>>());
    assert!(!t.check_vote_threshold(8, |s| if s == 0 { 2 } else { 0 }, 3, 2, 3));
    assert!(!t.check_vote_threshold(8, |s| if s == 0 { 200 } else { 0 }, 300, 2, 3));
    assert!(t.check_vote_threshold(8, |s| if s == 0 { 201 } else { 0 }, 300, 2, 3));
}

#[test]
fn from_parts_rejects_malformed_stacks() {
    let pk = Pubkey::from_seed_byte(1);
    let ok = tower_with(&[0, 1, 2]);
    let votes: Vec<Lockout> = ok.votes().copied().collect();
    assert!(Tower::from_parts(pk, votes.clone(), None, [0; 32], None).is_ok());
    let mut unsorted = votes.clone();
    unsorted.swap(0, 1);
    assert!(Tower::from_parts(pk, unsorted, None, [0; 32], None).is_err());
    assert!(Tower::from_parts(pk, votes.clone(), Some(5), [0; 32], None).is_err());
    let too_many: Vec<Lockout> = (0..40)
        .map(|i| Lockout {
            slot: i,
            confirmation_count: 40 - i as u32,
        })
        .collect();
    assert!(Tower::from_parts(pk, too_many, None, [0; 32], None).is_err());
}

/// `is_locked_out` as defined: simulate the vote on a copy of the stack, then every vote
/// left and the root must be ancestors.
fn locked_out_by_definition(t: &Tower, slot: Slot, is_ancestor: impl Fn(Slot) -> bool) -> bool {
    if t.last_voted_slot().is_some_and(|last| slot <= last) {
        return true;
    }
    let mut votes = t.votes.clone();
    let mut root = t.root;
    apply_vote(&mut votes, &mut root, slot);
    votes.iter().any(|v| v.slot != slot && !is_ancestor(v.slot))
        || root.is_some_and(|r| r != slot && !is_ancestor(r))
}

#[test]
fn is_locked_out_matches_its_definition_on_random_towers() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for _ in 0..300 {
        let mut t = Tower::new(Pubkey::from_seed_byte(1));
        let mut slot = 0;
        let gaps = next(2) == 0;
        for _ in 0..next(100) {
            // Half the towers never skip far: their stacks fill up and root.
            let range = if gaps && next(4) == 0 { 40 } else { 3 };
            slot += 1 + next(range);
            t.record_vote(slot, [0; 32], 0);
        }
        // A random "fork": everything is an ancestor except one slot of the tower (or
        // its root), or nothing, or a random part of all slots.
        let mut in_tower: Vec<Slot> = t.votes().map(|v| v.slot).chain(t.root()).collect();
        in_tower.push(u64::MAX);
        let excluded = in_tower[next(in_tower.len() as u64) as usize];
        let (salt, missing) = (next(1 << 20), next(4));
        let is_ancestor = |s: Slot| s != excluded && (s.wrapping_mul(0x9e37) ^ salt) % 7 >= missing;
        for candidate in slot.saturating_sub(3)..slot + 300 {
            assert_eq!(
                t.is_locked_out(candidate, is_ancestor),
                locked_out_by_definition(&t, candidate, is_ancestor),
                "tower {t:?} candidate {candidate}"
            );
        }
    }
}
