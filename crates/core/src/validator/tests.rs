//! The core's command sequences: store before send, retries, lost lock, fencing of
//! block production, bad input, duplicate instances.

use std::sync::Arc;

use huione_keys::Keypair;
use huione_tower::{SavedTower, Tower};
use huione_tower_storage::{LockOwner, MemoryTowerStorage, StoreReceipt};

use super::*;
use crate::block::Ed25519Verifier;
use crate::fence::{StoreFailure, StoreReport};
use crate::genesis::GenesisValidator;

const SLOT_MS: u64 = 100;

struct Node {
    core: Core,
    id: Keypair,
    genesis: Arc<Genesis>,
}

/// The genesis of a cluster whose one validator is `id` (all the stake; 100 ms slots).
pub(super) fn one_validator_genesis(id: &Keypair, vote_account: Pubkey) -> Arc<Genesis> {
    Arc::new(
        Genesis::new(
            vec![GenesisValidator {
                identity: id.pubkey(),
                vote_account,
                authorized_voter: id.pubkey(),
                stake: 10,
            }],
            SLOT_MS,
            64,
            0,
        )
        .unwrap(),
    )
}

/// A one-validator cluster: the node leads every slot and its vote is 2/3 of stake.
fn node() -> Node {
    node_with_fence(None)
}

/// A node whose leader claim reaches `leader_fence_slots` past each store (None: the
/// default).
fn node_with_fence(leader_fence_slots: Option<u64>) -> Node {
    let id = Keypair::from_secret(&[1; 32]);
    let vote_account = Pubkey::from_seed_byte(50);
    let genesis = one_validator_genesis(&id, vote_account);
    let mut cfg = CoreConfig::new(&genesis, vote_account, vec![id.clone()], "test-1".into());
    if let Some(f) = leader_fence_slots {
        cfg.leader_fence_slots = f;
    }
    let core = Core::new(
        genesis.clone(),
        cfg,
        id.clone(),
        Arc::new(Ed25519Verifier),
        None,
        0,
    );
    Node { core, id, genesis }
}

fn fence(id: &Keypair, revision: i64) -> Fence {
    Fence {
        identity: id.pubkey(),
        revision,
    }
}

fn take_identity(n: &mut Node, now: u64, revision: i64) -> Vec<Command> {
    take_identity_with(n, now, revision, None)
}

fn take_identity_with(
    n: &mut Node,
    now: u64,
    revision: i64,
    tower: Option<SavedTower>,
) -> Vec<Command> {
    let change = IdentityChange {
        keypair: n.id.clone(),
        tower,
        fence: fence(&n.id, revision),
    };
    n.core.set_identity(now, change).unwrap()
}

/// The receipt of a real store of `tower` under `fence`: a fresh in-memory storage,
/// its revision raised so that the acquire lands exactly on the fence's revision (>= 2).
fn receipt_for(fence: Fence, tower: &SavedTower) -> StoreReceipt {
    let s = MemoryTowerStorage::new();
    s.with_kv(|kv| {
        while kv.revision() + 1 < fence.revision {
            kv.put("/pad", Vec::new());
        }
    });
    let owner = LockOwner::new(fence.identity, "test-1", "test");
    let lease = s.acquire_now(&fence.identity, owner).unwrap();
    assert_eq!(lease.revision(), fence.revision, "test fences start at 2");
    s.store_now(&lease, tower).unwrap()
}

/// Stores the ticket's tower under its fence and confirms it with the receipt.
fn confirm(ticket: StoreTicket) -> StoreReport {
    let receipt = receipt_for(ticket.fence(), ticket.tower());
    let report = ticket.confirmed(receipt);
    assert!(report.is_confirmed(), "{:?}", report.failure());
    report
}

fn only_store(cmds: Vec<Command>) -> StoreTicket {
    let mut tickets: Vec<StoreTicket> = cmds
        .into_iter()
        .filter_map(|c| match c {
            Command::StoreTower(t) => Some(t),
            Command::SendVote(v) => panic!("vote {v:?} sent before its store"),
            _ => None,
        })
        .collect();
    assert_eq!(tickets.len(), 1, "exactly one store");
    tickets.pop().unwrap()
}

fn sent_votes(cmds: &[Command]) -> Vec<Slot> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::SendVote(v) => Some(v.vote().slot),
            _ => None,
        })
        .collect()
}

fn block_on(n: &Node, slot: Slot, parent: Slot, parent_hash: Hash) -> Block {
    Block::produce(&n.id, slot, parent, parent_hash, Vec::new())
}

/// Takes the identity at t=0, confirms the initial store, and feeds block 1 (produced
/// elsewhere with our key, e.g. by a previous instance) at `now`: the node decides to
/// vote for it and asks for a store.
fn voted_block_1(n: &mut Node, now: u64) -> StoreTicket {
    let first = only_store(take_identity(n, 0, 7));
    assert!(first.tower().node_pubkey() == n.id.pubkey());
    n.core.on_store_report(1, confirm(first));
    let b = block_on(n, 1, 0, n.genesis.hash);
    only_store(n.core.on_block(now, b))
}

#[test]
fn a_vote_is_released_only_by_its_confirmed_store() {
    let mut n = node();
    let ticket = voted_block_1(&mut n, 150);
    let tower: Tower = ticket.tower().verify(&n.id.pubkey()).unwrap();
    assert_eq!(
        tower.last_voted_slot(),
        Some(1),
        "the stored tower contains the vote"
    );
    let cmds = n.core.on_store_report(160, confirm(ticket));
    assert_eq!(sent_votes(&cmds), vec![1]);
    assert_eq!(n.core.stats().votes_sent, 1);
}

/// The store retried after a failed report at `t`: nothing at once, the retry a slot
/// later.
fn retried(n: &mut Node, t: u64) -> StoreTicket {
    assert!(sent_votes(&n.core.tick(t + 1)).is_empty());
    only_store(n.core.tick(t + SLOT_MS))
}

/// Only a receipt for this ticket's own store confirms it: one for other tower bytes
/// (the previous store's) or for another fence (same bytes, another lock revision or
/// identity) gives a failed report, the vote stays withheld and the store is retried.
#[test]
fn a_receipt_for_another_store_does_not_confirm() {
    let mut n = node();
    let first = only_store(take_identity(&mut n, 0, 7));
    let earlier_bytes = first.tower().clone();
    n.core.on_store_report(1, confirm(first));
    let b = block_on(&n, 1, 0, n.genesis.hash);
    let ticket = only_store(n.core.on_block(150, b));
    let other = Keypair::from_secret(&[9; 32]);
    let wrong = [
        // Other bytes, same fence.
        receipt_for(ticket.fence(), &earlier_bytes),
        // Same bytes, another lock revision of the same identity.
        receipt_for(fence(&n.id, 8), ticket.tower()),
    ];
    let mut ticket = ticket;
    let mut t = 160;
    for (i, receipt) in wrong.into_iter().enumerate() {
        let report = ticket.confirmed(receipt);
        assert!(!report.is_confirmed(), "case {i}: confirmed");
        assert!(
            matches!(report.failure(), Some(StoreFailure::BadReceipt(m)) if m.contains("receipt")),
            "case {i}: {:?}",
            report.failure()
        );
        let cmds = n.core.on_store_report(t, report);
        assert!(
            sent_votes(&cmds).is_empty(),
            "case {i}: sent on a bad receipt"
        );
        ticket = retried(&mut n, t);
        t += SLOT_MS + 10;
    }
    // Another identity's receipt does not confirm either (its storage refuses our bytes,
    // so its own tower's receipt is used).
    let theirs = SavedTower::new(&Tower::new(other.pubkey()), &other).unwrap();
    let report = ticket.confirmed(receipt_for(fence(&other, 7), &theirs));
    assert!(!report.is_confirmed());
    n.core.on_store_report(t, report);
    let ticket = retried(&mut n, t);
    // The vote is still withheld; the ticket's own receipt releases it.
    let cmds = n.core.on_store_report(t + SLOT_MS + 10, confirm(ticket));
    assert_eq!(sent_votes(&cmds), vec![1]);
    assert_eq!(n.core.stats().store_failures, 3);
}

#[test]
fn a_transient_failure_withholds_the_vote_and_retries() {
    let mut n = node();
    let ticket = voted_block_1(&mut n, 150);
    let cmds = n.core.on_store_report(
        160,
        ticket.failed(StoreFailure::Unavailable("etcd down".into())),
    );
    assert!(cmds.is_empty(), "{cmds:?}");
    // Before the retry delay nothing is sent or stored.
    assert!(sent_votes(&n.core.tick(170)).is_empty());
    let retry = only_store(n.core.tick(160 + SLOT_MS));
    let cmds = n.core.on_store_report(200, confirm(retry));
    assert_eq!(
        sent_votes(&cmds),
        vec![1],
        "the withheld vote goes out after the retry"
    );
    assert_eq!(n.core.stats().store_failures, 1);
}

/// Ticks every 25 ms from `from` to `to`, confirming every store at once, and returns
/// the slots of the blocks produced and the time of an exit.
fn run_confirming(n: &mut Node, from: u64, to: u64) -> (Vec<Slot>, Option<u64>) {
    let (mut produced, mut exit) = (Vec::new(), None);
    let mut pending: Vec<StoreTicket> = Vec::new();
    for t in (from..to).step_by(25) {
        let mut cmds = n.core.tick(t);
        for ticket in pending.drain(..) {
            cmds.extend(n.core.on_store_report(t, confirm(ticket)));
        }
        for c in cmds {
            match c {
                Command::BroadcastBlock(b) => produced.push(b.slot),
                Command::StoreTower(ticket) => pending.push(ticket),
                Command::Exit(_) => exit = exit.or(Some(t)),
                _ => {}
            }
        }
    }
    (produced, exit)
}

#[test]
fn a_lost_lock_without_a_claim_exits_at_once() {
    let mut n = node();
    let first = only_store(take_identity(&mut n, 0, 7));
    let cmds = n
        .core
        .on_store_report(10, first.failed(StoreFailure::LockLost("taken".into())));
    assert!(
        matches!(cmds.as_slice(), [Command::Exit(ExitReason::LockLost(_))]),
        "{cmds:?}"
    );
    assert!(n.core.is_halted());
}

#[test]
fn by_default_a_store_claims_one_slot_past_the_slot_it_was_issued_in() {
    let mut n = node();
    let _ticket = voted_block_1(&mut n, 150);
    assert_eq!(
        n.core.status().leader_claim,
        Some(1),
        "issued in slot 0, F = 1"
    );
}

#[test]
fn a_lost_lock_stops_voting_at_once_and_exits_after_the_claimed_leader_slots() {
    // F = 2 (not the default 1), so the claim reaches a slot after the vote's.
    let mut n = node_with_fence(Some(2));
    let ticket = voted_block_1(&mut n, 150);
    let claim = n
        .core
        .status()
        .leader_claim
        .expect("the first store was confirmed");
    assert_eq!(claim, 2, "issued in slot 0, F = 2");
    let cmds = n
        .core
        .on_store_report(160, ticket.failed(StoreFailure::LockLost("taken".into())));
    assert!(cmds.is_empty(), "no vote, no exit yet: {cmds:?}");
    let status = n.core.status();
    assert!(status.stepping_down && !status.voting && status.halted.is_none());
    // It still leads the slots its confirmed claim covers (the next holder starts above
    // the claim it stored), stores and votes nothing, then exits.
    let (produced, exit) = run_confirming(&mut n, 175, 1_000);
    assert_eq!(
        produced,
        vec![2],
        "only the claimed slot after the vote's slot"
    );
    assert_eq!(exit, Some(300), "exits as soon as slot 3 begins");
    assert_eq!(n.core.stats().votes_sent, 0);
    assert!(n.core.is_halted());
    assert!(n.core.tick(5_000).is_empty());
    let b2 = block_on(&n, 2, 1, Hash::default());
    assert!(n.core.on_block(5_000, b2).is_empty());
    let again = IdentityChange {
        keypair: n.id.clone(),
        tower: None,
        fence: fence(&n.id, 99),
    };
    assert!(matches!(
        n.core.set_identity(5_000, again),
        Err(CoreError::Halted(_))
    ));
}

#[test]
fn a_report_from_before_an_identity_change_is_ignored() {
    let mut n = node();
    let old = voted_block_1(&mut n, 150);
    let new = only_store(take_identity(&mut n, 170, 20));
    let cmds = n.core.on_store_report(180, confirm(old));
    assert!(
        sent_votes(&cmds).is_empty(),
        "the old fence's vote is never sent"
    );
    assert_eq!(n.core.stats().stale_store_reports, 1);
    assert_eq!(new.fence().revision, 20);
}

#[test]
fn block_production_is_fenced_by_floor_and_claim() {
    let mut n = node();
    // An earlier holder stored a tower claiming slots up to 9.
    let mut earlier = Tower::new(n.id.pubkey());
    earlier.raise_leader_claim(9);
    let earlier = SavedTower::new(&earlier, &n.id).unwrap();
    let first = only_store(take_identity_with(&mut n, 0, 7, Some(earlier)));
    let status = n.core.status();
    assert_eq!(status.leader_floor, Some(9), "the stored claim");
    assert_eq!(status.leader_claim, None, "no confirmed store yet");
    assert_eq!(first.claim(), Some(9), "claims never go down in storage");
    n.core.on_store_report(1, confirm(first));
    assert_eq!(n.core.status().leader_claim, Some(9));
    let mut produced = Vec::new();
    let mut pending: Option<StoreTicket> = None;
    for t in (0..20 * SLOT_MS).step_by(25) {
        let mut cmds = n.core.tick(t);
        if let Some(ticket) = pending.take() {
            cmds.extend(n.core.on_store_report(t, confirm(ticket)));
        }
        for c in cmds {
            match c {
                Command::BroadcastBlock(b) => produced.push(b.slot),
                Command::StoreTower(ticket) => pending = Some(ticket),
                _ => {}
            }
        }
    }
    assert!(!produced.is_empty());
    assert!(
        produced.iter().all(|s| *s > 9),
        "nothing at or below the floor: {produced:?}"
    );
    let mut dedup = produced.clone();
    dedup.dedup();
    assert_eq!(dedup, produced, "each slot at most once");
    assert!(n.core.stats().leader_slots_fenced >= 1);
}

#[test]
fn a_tower_without_a_stored_claim_falls_back_to_the_clock_floor() {
    let mut n = node();
    // Format version 1 towers carry no claim.
    let earlier = SavedTower::new(&Tower::new(n.id.pubkey()), &n.id).unwrap();
    let _ticket = only_store(take_identity_with(&mut n, 250, 7, Some(earlier)));
    assert_eq!(
        n.core.status().leader_floor,
        Some(2 + LEGACY_LEADER_FENCE_SLOTS + 1),
        "slot(now) + legacy F + skew"
    );
}

/// The bug this design fixes: a primary whose clock runs ahead claims slots (by its
/// clock) that a taker's clock-based floor did not cover. With the claim carried in the
/// stored tower, the taker starts above whatever the old holder could confirm.
#[test]
fn a_taker_starts_above_the_claim_of_a_primary_whose_clock_runs_ahead() {
    let mut old = node();
    let ahead_ms = 800; // two slots of 400 ms in the issue; 8 slots of 100 ms here
    let t0 = 1_000;
    let first = only_store(take_identity(&mut old, t0 + ahead_ms, 7));
    let stored = first.tower().clone();
    old.core.on_store_report(t0 + ahead_ms, confirm(first));
    let old_claim = old.core.status().leader_claim.unwrap();
    // The taker acquires right after that store, by a correct clock.
    let mut new = node();
    let _ticket = only_store(take_identity_with(&mut new, t0 + 10, 9, Some(stored)));
    let floor = new.core.status().leader_floor.unwrap();
    assert!(
        floor >= old_claim,
        "taker floor {floor} must cover the old holder's claim {old_claim}"
    );
    // The clock-based floor of the previous design did not.
    let clock_floor = new.genesis.slot_at(t0 + 10) + 2 + 1;
    assert!(
        clock_floor < old_claim,
        "the scenario exercises the old bug"
    );
}

#[test]
fn a_lone_validator_lands_its_own_votes_in_its_blocks_and_roots() {
    let mut n = node();
    let first = only_store(take_identity(&mut n, 0, 7));
    n.core.on_store_report(0, confirm(first));
    let (produced, exit) = run_confirming(&mut n, 0, 60 * SLOT_MS);
    assert_eq!(exit, None);
    assert!(produced.len() > 50, "{produced:?}");
    let status = n.core.status();
    let bank = n.core.bank(status.best_slot).unwrap();
    let account = bank.account(&n.core.cfg.vote_account).unwrap();
    let landed = account
        .lockouts
        .last_voted_slot()
        .expect("our votes landed");
    assert!(
        landed + 2 >= status.best_slot,
        "landed {landed}, best {}",
        status.best_slot
    );
    assert!(
        status.root > 0,
        "31 landed votes deep roots a lone validator"
    );
}

#[test]
fn an_identity_nobody_ever_stored_a_tower_for_leads_from_its_first_slots() {
    let mut n = node();
    let first = only_store(take_identity(&mut n, 0, 7));
    assert_eq!(
        n.core.status().leader_floor,
        Some(0),
        "no earlier claim can exist"
    );
    assert_eq!(
        n.core.status().leader_claim,
        None,
        "but no confirmed store yet"
    );
    let mut produced = Vec::new();
    let mut pending = Some(first);
    for t in (0..12 * SLOT_MS).step_by(25) {
        let mut cmds = n.core.tick(t);
        if let Some(ticket) = pending.take() {
            cmds.extend(n.core.on_store_report(t, confirm(ticket)));
        }
        for c in cmds {
            match c {
                Command::BroadcastBlock(b) => produced.push(b.slot),
                Command::StoreTower(ticket) => pending = Some(ticket),
                _ => {}
            }
        }
    }
    // The node leads every slot: the first one after genesis is produced, not fenced.
    assert_eq!(produced.first(), Some(&1), "{produced:?}");
    assert_eq!(produced, (1..12).collect::<Vec<u64>>());
}

#[test]
fn bad_blocks_and_votes_are_dropped_and_counted() {
    let mut n = node();
    let stranger = Keypair::from_secret(&[9; 32]);
    let wrong_leader = Block::produce(&stranger, 1, 0, n.genesis.hash, Vec::new());
    assert!(n.core.on_block(150, wrong_leader).is_empty());
    let mut bad_sig = block_on(&n, 1, 0, n.genesis.hash);
    bad_sig.signature.0[3] ^= 1;
    n.core.on_block(150, bad_sig);
    let future = block_on(&n, 50, 0, n.genesis.hash);
    n.core.on_block(150, future);
    assert_eq!(n.core.stats().blocks_dropped, 3);
    let forged = SignedVote::sign(
        &stranger,
        Pubkey::from_seed_byte(50),
        stranger.pubkey(),
        1,
        Hash::default(),
        0,
    );
    n.core.on_vote(250, forged);
    assert_eq!(n.core.stats().gossip_votes_dropped, 1);
    assert_eq!(n.core.fork_slots(), vec![0]);
}

#[test]
fn an_orphan_asks_for_repair_and_replays_when_its_parent_arrives() {
    let mut n = node();
    let b1 = block_on(&n, 1, 0, n.genesis.hash);
    let b2 = block_on(&n, 2, 1, b1.hash);
    let cmds = n.core.on_block(250, b2.clone());
    assert!(
        matches!(cmds.as_slice(), [Command::RequestRepair { slot: 1, .. }]),
        "{cmds:?}"
    );
    n.core.on_blocks(260, vec![b1]);
    assert_eq!(n.core.fork_slots(), vec![0, 1, 2]);
    let answer = n.core.on_repair_request(3, 2, b2.hash);
    assert!(
        matches!(answer.as_slice(), [Command::SendRepair { to: 3, blocks }] if blocks.len() == 2)
    );
}

#[test]
fn the_older_of_two_instances_exits() {
    let mut n = node();
    take_identity(&mut n, 0, 7);
    let older = InstanceAnnouncement::sign(&n.id, "other-old".into(), 3, 0);
    let cmds = n.core.on_announcement(10, older);
    assert!(
        matches!(cmds.as_slice(), [Command::Announce(_)]),
        "we answer, we stay"
    );
    let mut forged = InstanceAnnouncement::sign(&n.id, "other-new".into(), 30, 5);
    forged.fence_revision = 31;
    assert!(n.core.on_announcement(10, forged).is_empty());
    assert_eq!(n.core.stats().announcements_dropped, 1);
    let newer = InstanceAnnouncement::sign(&n.id, "other-new".into(), 30, 5);
    let cmds = n.core.on_announcement(10, newer);
    assert!(matches!(
        cmds.as_slice(),
        [Command::Exit(ExitReason::DuplicateInstance { .. })]
    ));
}

#[test]
fn set_identity_checks_the_fence_and_the_vote_account() {
    let mut n = node();
    let other = Keypair::from_secret(&[2; 32]);
    let mismatch = IdentityChange {
        keypair: n.id.clone(),
        tower: None,
        fence: fence(&other, 1),
    };
    assert!(matches!(
        n.core.set_identity(0, mismatch),
        Err(CoreError::FenceMismatch { .. })
    ));
    let not_ours = IdentityChange {
        keypair: other.clone(),
        tower: None,
        fence: fence(&other, 1),
    };
    assert!(matches!(
        n.core.set_identity(0, not_ours),
        Err(CoreError::NotThisNodesAccount { .. })
    ));
    let foreign_tower = huione_tower::SavedTower::new(&Tower::new(other.pubkey()), &other).unwrap();
    let wrong_tower = IdentityChange {
        keypair: n.id.clone(),
        tower: Some(foreign_tower),
        fence: fence(&n.id, 1),
    };
    assert!(matches!(
        n.core.set_identity(0, wrong_tower),
        Err(CoreError::BadTower(_))
    ));
    assert!(!n.core.status().voting);
}

#[test]
fn authorized_voters_gate_can_vote_as_and_set_identity() {
    // A standby: its own identity, the vote account's node is `primary`.
    let primary = Keypair::from_secret(&[1; 32]);
    let standby = Keypair::from_secret(&[3; 32]);
    let vote_account = Pubkey::from_seed_byte(50);
    let genesis = Arc::new(
        Genesis::new(
            vec![GenesisValidator {
                identity: primary.pubkey(),
                vote_account,
                authorized_voter: primary.pubkey(),
                stake: 10,
            }],
            SLOT_MS,
            64,
            0,
        )
        .unwrap(),
    );
    let cfg = CoreConfig::new(&genesis, vote_account, vec![standby.clone()], "s".into());
    let mut core = Core::new(
        genesis,
        cfg,
        standby.clone(),
        Arc::new(Ed25519Verifier),
        None,
        0,
    );
    assert!(matches!(
        core.can_vote_as(&primary),
        Err(CoreError::NoAuthorizedVoter(_))
    ));
    core.add_authorized_voter(primary.clone());
    core.add_authorized_voter(primary.clone());
    assert_eq!(core.authorized_voters().len(), 2);
    assert!(core.can_vote_as(&primary).is_ok());
    assert!(!core.status().voting, "checking changes nothing");
    core.remove_authorized_voters();
    assert_eq!(core.authorized_voters(), vec![standby.pubkey()]);
    assert!(core.can_vote_as(&primary).is_err());
    core.add_authorized_voter(primary.clone());
    let change = IdentityChange {
        keypair: primary.clone(),
        tower: None,
        fence: fence(&primary, 7),
    };
    assert!(core.set_identity(0, change).is_ok());
    assert!(core.status().voting);
}

#[test]
fn a_storage_outage_is_timed_from_the_first_unanswered_store() {
    let mut n = node();
    n.core = {
        let mut cfg = CoreConfig::new(
            &n.genesis,
            Pubkey::from_seed_byte(50),
            vec![n.id.clone()],
            "t".into(),
        );
        cfg.max_store_outage_ms = Some(1000);
        Core::new(
            n.genesis.clone(),
            cfg,
            n.id.clone(),
            Arc::new(Ed25519Verifier),
            None,
            0,
        )
    };
    // The identity's first store is issued at t=0 and never answers (frozen storage).
    let _ticket = only_store(take_identity(&mut n, 0, 1));
    let exit_at = exit_time(&mut n, (0..=1100).step_by(50));
    assert_eq!(exit_at, Some(1050), "the first tick past 1000 ms of outage");
    assert!(n.core.is_halted());
}

/// Ticks at `times` and returns the time of a storage-outage exit.
fn exit_time(n: &mut Node, times: impl Iterator<Item = u64>) -> Option<u64> {
    times.into_iter().find(|t| {
        n.core
            .tick(*t)
            .iter()
            .any(|c| matches!(c, Command::Exit(ExitReason::StorageOutage { .. })))
    })
}

/// Timers run on the core's monotonic time: a wall clock stepping back used to
/// underflow `now_ms - since` (a panic in a debug build, a huge outage in release that
/// exited a healthy node), and a step forwards used to count as outage.
#[test]
fn wall_clock_steps_do_not_move_the_storage_outage_timer() {
    let mut n = node();
    n.core = {
        let mut cfg = CoreConfig::new(
            &n.genesis,
            Pubkey::from_seed_byte(50),
            vec![n.id.clone()],
            "t".into(),
        );
        cfg.max_store_outage_ms = Some(5000);
        Core::new(
            n.genesis.clone(),
            cfg,
            n.id.clone(),
            Arc::new(Ed25519Verifier),
            None,
            0,
        )
    };
    let t0 = 3_600_000;
    let ticket = only_store(take_identity(&mut n, t0, 1));
    assert_eq!(exit_time(&mut n, (t0..t0 + 300).step_by(50)), None);
    // The clock steps back an hour; the store's failure is reported after the step.
    let back = t0 - 3_600_000 + 300;
    n.core.tick(back);
    let cmds = n.core.on_store_report(
        back + 10,
        ticket.failed(StoreFailure::Unavailable("etcd down".into())),
    );
    assert!(cmds.is_empty(), "{cmds:?}");
    // Then forwards by an hour and a half: that step counts as at most
    // MAX_TICK_STEP_MS, so ~1.5 s of outage so far, under the 5 s limit.
    let fwd = t0 + 5_400_000;
    assert_eq!(exit_time(&mut n, (fwd..fwd + 300).step_by(50)), None);
    // Real time passing still ends a real outage, when its monotonic sum passes 5 s.
    let exit = exit_time(&mut n, (fwd + 300..fwd + 10_000).step_by(50));
    let expected = fwd + (5000 - 250 - MAX_TICK_STEP_MS) + 50;
    assert_eq!(
        exit,
        Some(expected),
        "a real outage past the limit still exits"
    );
}

#[test]
fn a_paused_process_renews_its_claim_before_it_leads_again() {
    let mut n = node();
    let first = only_store(take_identity(&mut n, 0, 7));
    n.core.on_store_report(0, confirm(first));
    let (produced, _) = run_confirming(&mut n, 0, 5 * SLOT_MS);
    assert!(produced.contains(&4), "{produced:?}");
    // Frozen for 5 slots: the first tick after the gap drops the claim and asks for a
    // store; nothing is produced until that store is confirmed.
    let cmds = n.core.tick(10 * SLOT_MS + 30);
    assert_eq!(n.core.status().leader_claim, None);
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::BroadcastBlock(_))),
        "{cmds:?}"
    );
    let renew = only_store(cmds);
    let cmds = n.core.on_store_report(
        10 * SLOT_MS + 40,
        renew.failed(StoreFailure::LockLost("taken".into())),
    );
    assert!(
        matches!(cmds.as_slice(), [Command::Exit(ExitReason::LockLost(_))]),
        "a lost lock found by the renewal exits without producing: {cmds:?}"
    );
}

/// Two validators; `a` is ours. Returns our node and the other leader's keypair.
fn two_validators() -> (Node, Keypair) {
    two_validators_staked(10, 10)
}

/// [`two_validators`] with these stakes (ours, theirs).
fn two_validators_staked(ours: u64, theirs: u64) -> (Node, Keypair) {
    let id = Keypair::from_secret(&[1; 32]);
    let other = Keypair::from_secret(&[2; 32]);
    let vote_account = Pubkey::from_seed_byte(50);
    let genesis = Arc::new(
        Genesis::new(
            vec![
                GenesisValidator {
                    identity: id.pubkey(),
                    vote_account,
                    authorized_voter: id.pubkey(),
                    stake: ours,
                },
                GenesisValidator {
                    identity: other.pubkey(),
                    vote_account: Pubkey::from_seed_byte(51),
                    authorized_voter: other.pubkey(),
                    stake: theirs,
                },
            ],
            SLOT_MS,
            64,
            0,
        )
        .unwrap(),
    );
    let cfg = CoreConfig::new(&genesis, vote_account, vec![id.clone()], "test-1".into());
    let core = Core::new(
        genesis.clone(),
        cfg,
        id.clone(),
        Arc::new(Ed25519Verifier),
        None,
        0,
    );
    (Node { core, id, genesis }, other)
}

#[test]
fn a_clock_far_from_the_clusters_is_measured_and_keeps_the_node_from_leading() {
    let (mut n, other) = two_validators();
    let schedule = crate::genesis::LeaderSchedule::compute(&n.genesis, 0);
    let theirs: Vec<Slot> = (1..64)
        .filter(|s| schedule.leader_at(*s) == Some(other.pubkey()))
        .take(6)
        .collect();
    assert_eq!(theirs.len(), 6, "the other validator leads some slots");
    let late_ms = 5 * SLOT_MS; // our clock runs 500 ms ahead of theirs
    let (mut parent, mut parent_hash) = (0, n.genesis.hash);
    for s in &theirs {
        let b = Block::produce(&other, *s, parent, parent_hash, Vec::new());
        (parent, parent_hash) = (b.slot, b.hash);
        let arrival = n.genesis.slot_start_ms(*s) + n.core.cfg.produce_delay_ms + late_ms;
        n.core.on_block(arrival, b);
    }
    let offset = n.core.status().clock_offset_ms.expect("enough samples");
    assert_eq!(offset, late_ms as i64);
    // Take the identity and keep the claim confirmed: no slot is led while the clock is off.
    let now = n.genesis.slot_start_ms(parent) + late_ms + 30;
    let first = only_store(take_identity(&mut n, now, 7));
    assert_eq!(first.claim(), None, "a clock that far off raises no claim");
    n.core.on_store_report(now, confirm(first));
    let (produced, _) = run_confirming(&mut n, now, now + 20 * SLOT_MS);
    assert!(produced.is_empty(), "{produced:?}");
    assert!(n.core.stats().leader_slots_fenced > 0);
}

#[test]
fn a_vote_kept_back_by_a_lockout_says_until_when() {
    let mut n = node();
    // A tower that voted on slot 5 of a fork this node never saw: lockout 2, so a vote on
    // another fork is forbidden up to slot 7.
    let mut tower = Tower::new(n.id.pubkey());
    tower.record_vote(5, [5; 32], 0);
    let saved = SavedTower::new(&tower, &n.id).unwrap();
    let first = only_store(take_identity_with(&mut n, 0, 7, Some(saved)));
    n.core.on_store_report(1, confirm(first));
    let b6 = block_on(&n, 6, 0, n.genesis.hash);
    let h6 = b6.hash;
    let cmds = n.core.on_block(650, b6);
    assert!(sent_votes(&cmds).is_empty());
    assert_eq!(
        n.core.stats().withheld,
        Some(VoteWithheld {
            rule: WithheldRule::Lockout,
            slot: 6,
            until_slot: Some(8),
        })
    );
    assert_eq!(n.core.stats().locked_out, 1);
    // Past the lockout the node votes again and the reason clears.
    let cmds = n.core.on_block(950, block_on(&n, 9, 6, h6));
    let ticket = only_store(cmds);
    assert_eq!(n.core.stats().withheld, None);
    assert_eq!(
        sent_votes(&n.core.on_store_report(960, confirm(ticket))),
        vec![9]
    );
}

/// A busy machine's scheduling gap (more than two slots between ticks) used to throw the
/// clock samples away, so a node whose clock runs ahead could spend most of its time with
/// no estimate ("unknown" leads) — seen as a flaky real-process test. A gap now starts a
/// new epoch: the old estimate stands until the new epoch has enough samples of its own
/// (after a clock step, those give the new offset).
#[test]
fn a_tick_gap_keeps_the_clock_estimate_until_enough_fresh_samples_replace_it() {
    let (mut n, other) = two_validators();
    let schedule = crate::genesis::LeaderSchedule::compute(&n.genesis, 0);
    let theirs: Vec<Slot> = (1..64)
        .filter(|s| schedule.leader_at(*s) == Some(other.pubkey()))
        .take(10)
        .collect();
    assert_eq!(theirs.len(), 10, "the other validator leads enough slots");
    let late_ms = 5 * SLOT_MS; // our clock runs 500 ms ahead of theirs
    let (mut parent, mut parent_hash) = (0, n.genesis.hash);
    let mut deliver = |n: &mut Node, s: Slot, late: u64| {
        let b = Block::produce(&other, s, parent, parent_hash, Vec::new());
        (parent, parent_hash) = (b.slot, b.hash);
        let arrival = n.genesis.slot_start_ms(s) + n.core.cfg.produce_delay_ms + late;
        n.core.on_block(arrival, b);
        arrival
    };
    let mut last = 0;
    for s in &theirs[..5] {
        last = deliver(&mut n, *s, late_ms);
    }
    assert_eq!(n.core.status().clock_offset_ms, Some(late_ms as i64));
    n.core.tick(last);
    n.core.tick(last + 10 * SLOT_MS);
    assert_eq!(
        n.core.status().clock_offset_ms,
        Some(late_ms as i64),
        "a gap between ticks must not blind the estimate"
    );
    // Our clock was stepped back to the cluster's: blocks now arrive on time. Until the
    // new epoch has MIN_CLOCK_SAMPLES, the old estimate stands; then the new one.
    for (i, s) in theirs[5..].iter().enumerate() {
        deliver(&mut n, *s, 0);
        let expected = if i + 1 >= MIN_CLOCK_SAMPLES {
            0
        } else {
            late_ms as i64
        };
        assert_eq!(
            n.core.status().clock_offset_ms,
            Some(expected),
            "after {} fresh",
            i + 1
        );
    }
}

/// A node whose clock was stepped back (here 5 slots) saw every block as "from the future"
/// and dropped it: it stopped voting until its clock was fixed. It now measures the
/// offset from those same broadcasts and accepts blocks that far ahead.
#[test]
fn a_node_whose_clock_runs_behind_accepts_the_clusters_blocks_once_it_has_measured_it() {
    let (mut n, other) = two_validators();
    let schedule = crate::genesis::LeaderSchedule::compute(&n.genesis, 0);
    let theirs: Vec<Slot> = (10..200)
        .filter(|s| schedule.leader_at(*s) == Some(other.pubkey()))
        .take(8)
        .collect();
    assert_eq!(theirs.len(), 8, "the other validator leads enough slots");
    let early_ms = 5 * SLOT_MS; // our clock runs 500 ms behind theirs
    let (mut parent, mut parent_hash) = (0, n.genesis.hash);
    let blocks: Vec<Block> = theirs
        .iter()
        .map(|s| {
            let b = Block::produce(&other, *s, parent, parent_hash, Vec::new());
            (parent, parent_hash) = (b.slot, b.hash);
            b
        })
        .collect();
    let arrival = |n: &Node, b: &Block| {
        n.genesis.slot_start_ms(b.slot) + n.core.cfg.produce_delay_ms - early_ms
    };
    for b in &blocks[..MIN_CLOCK_SAMPLES] {
        n.core.on_block(arrival(&n, b), b.clone());
    }
    assert_eq!(n.core.status().clock_offset_ms, Some(-(early_ms as i64)));
    assert_eq!(
        n.core.status().best_slot,
        0,
        "dropped before the offset was known"
    );
    // The dropped blocks come back by repair and replay; later broadcasts extend them.
    let now = arrival(&n, &blocks[MIN_CLOCK_SAMPLES - 1]);
    n.core.on_blocks(now, blocks[..MIN_CLOCK_SAMPLES].to_vec());
    assert_eq!(n.core.status().best_slot, theirs[MIN_CLOCK_SAMPLES - 1]);
    for b in &blocks[MIN_CLOCK_SAMPLES..] {
        n.core.on_block(arrival(&n, b), b.clone());
    }
    assert_eq!(n.core.status().best_slot, theirs[7]);
}

/// A voter cut off from the cluster (here: nothing from the other validator after its
/// first block) still produces its slots, but stops voting on them once it has heard from
/// nobody for `peer_silence_limit_ms`: those votes reach no one and would only lock the
/// tower onto a fork no one else has — which the standby taking over (or this node once
/// healed) would have to wait out. Hearing a peer again, it votes at once.
#[test]
fn a_voter_that_hears_no_other_validator_withholds_its_votes_until_it_does() {
    let (mut n, other) = two_validators();
    let schedule = crate::genesis::LeaderSchedule::compute(&n.genesis, 0);
    let t1 = (1..64)
        .find(|s| schedule.leader_at(*s) == Some(other.pubkey()))
        .expect("the other validator leads a slot");
    let b1 = Block::produce(&other, t1, 0, n.genesis.hash, Vec::new());
    let heard = n.genesis.slot_start_ms(t1) + n.core.cfg.produce_delay_ms;
    n.core.on_block(heard, b1);
    let first = only_store(take_identity(&mut n, heard + 1, 7));
    let mut pending: Vec<StoreTicket> = Vec::new();
    let mut votes = Vec::new();
    for c in n.core.on_store_report(heard + 1, confirm(first)) {
        match c {
            Command::StoreTower(ticket) => pending.push(ticket),
            Command::SendVote(v) => votes.push((heard + 1, v.vote().slot)),
            _ => {}
        }
    }

    let limit = n.core.cfg.peer_silence_limit_ms;
    let mut produced = Vec::new();
    let end = heard + 30 * SLOT_MS;
    for t in (heard + 2..end).step_by(25) {
        let mut cmds = n.core.tick(t);
        for ticket in std::mem::take(&mut pending) {
            cmds.extend(n.core.on_store_report(t, confirm(ticket)));
        }
        for c in cmds {
            match c {
                Command::BroadcastBlock(b) => produced.push(b),
                Command::StoreTower(ticket) => pending.push(ticket),
                Command::SendVote(v) => votes.push((t, v.vote().slot)),
                _ => {}
            }
        }
    }
    assert!(!produced.is_empty(), "the node leads some of these slots");
    assert!(
        votes.iter().all(|(t, _)| *t <= heard + limit + 25),
        "voted after {limit} ms without a peer: {votes:?}"
    );
    assert!(n.core.stats().isolated_withheld > 0);
    assert_eq!(
        n.core.stats().withheld.map(|w| w.rule),
        Some(WithheldRule::Isolated)
    );

    // The other validator is back: its block on our last one, and the node votes on it.
    let last = produced.last().unwrap();
    let t2 = (last.slot + 1..last.slot + 64)
        .find(|s| schedule.leader_at(*s) == Some(other.pubkey()))
        .expect("the other validator leads again");
    let b2 = Block::produce(&other, t2, last.slot, last.hash, Vec::new());
    let now = n.genesis.slot_start_ms(t2) + n.core.cfg.produce_delay_ms;
    for ticket in pending {
        assert!(sent_votes(&n.core.on_store_report(now - 1, confirm(ticket))).is_empty());
    }
    let ticket = only_store(n.core.on_block(now, b2));
    assert_eq!(
        sent_votes(&n.core.on_store_report(now, confirm(ticket))),
        vec![t2]
    );
}

/// What one phase of [`run_with_peer`] saw.
#[derive(Default)]
struct Phase {
    produced: Vec<Slot>,
    /// Votes sent: (time, slot).
    sent: Vec<(u64, Slot)>,
    /// Stores issued (the last vote of each stored tower).
    stores: Vec<Option<Slot>>,
}

/// Runs `n` from `from` to `to` ms, ticking every 25 ms, confirming every store, while the
/// other validator produces its leader slots on our best block (its block arrives at
/// its slot's start plus the produce delay).
fn run_with_peer(
    n: &mut Node,
    other: &Keypair,
    pending: &mut Vec<StoreTicket>,
    from: u64,
    to: u64,
) -> Phase {
    let schedule = crate::genesis::LeaderSchedule::compute(&n.genesis, 0);
    let mut phase = Phase::default();
    for t in (from..to).step_by(25) {
        let slot = n.genesis.slot_at(t);
        let due = n.genesis.slot_start_ms(slot) + n.core.cfg.produce_delay_ms;
        let mut cmds = Vec::new();
        if schedule.leader_at(slot) == Some(other.pubkey()) && (due..due + 25).contains(&t) {
            let best = n.core.status().best_slot;
            let hash = n.core.bank(best).unwrap().hash;
            let b = Block::produce(other, slot, best, hash, Vec::new());
            cmds.extend(n.core.on_block(t, b));
        }
        cmds.extend(n.core.tick(t));
        for ticket in std::mem::take(pending) {
            cmds.extend(n.core.on_store_report(t, confirm(ticket)));
        }
        for c in cmds {
            match c {
                Command::BroadcastBlock(b) => phase.produced.push(b.slot),
                Command::StoreTower(ticket) => {
                    let tower = ticket.tower().verify(&n.id.pubkey()).unwrap();
                    phase.stores.push(tower.last_voted_slot());
                    pending.push(ticket);
                }
                Command::SendVote(v) => phase.sent.push((t, v.vote().slot)),
                Command::Exit(r) => panic!("exited: {r}"),
                _ => {}
            }
        }
    }
    phase
}

/// A node whose driver cannot record (its ledger disk is full) neither votes nor leads:
/// the blocks it would produce could not leave, and votes on them would lock its tower —
/// which the standby loads on a failover — onto a fork nobody else has. Told it can
/// record again, it votes and leads at once.
#[test]
fn a_node_that_cannot_record_neither_votes_nor_leads_until_it_can_again() {
    // Our stake alone passes the threshold, so only the new rule can keep us from voting.
    let (mut n, other) = two_validators_staked(30, 10);
    let first = only_store(take_identity(&mut n, 1, 7));
    let mut pending = vec![first];
    let t1 = 10 * SLOT_MS;
    let before = run_with_peer(&mut n, &other, &mut pending, 2, t1);
    assert!(!before.produced.is_empty(), "it leads while it can record");
    assert!(
        before.sent.len() > 3,
        "it votes while it can record: {:?}",
        before.sent
    );
    let best_at_switch = n.core.status().best_slot;
    let decided = n.core.stats().votes_decided;
    let fenced = n.core.stats().leader_slots_fenced;

    n.core.set_recording(false);
    assert!(!n.core.recording());
    let t2 = t1 + 20 * SLOT_MS;
    let during = run_with_peer(&mut n, &other, &mut pending, t1, t2);
    assert_eq!(
        during.produced,
        Vec::<Slot>::new(),
        "led while it cannot record"
    );
    assert_eq!(
        n.core.stats().votes_decided,
        decided,
        "decided votes while it cannot record: sent {:?}, stored {:?}",
        during.sent,
        during.stores
    );
    // Only a vote in flight when recording failed may still be confirmed and sent.
    assert!(
        during.sent.iter().all(|(_, s)| *s <= best_at_switch),
        "{:?} after the switch at best slot {best_at_switch}",
        during.sent
    );
    assert_eq!(
        during.stores,
        Vec::<Option<Slot>>::new(),
        "no new store: no vote, no claim renewal"
    );
    assert!(n.core.stats().unrecordable_withheld > 0);
    assert_eq!(
        n.core.stats().withheld.map(|w| w.rule),
        Some(WithheldRule::Unrecordable)
    );
    assert!(
        n.core.stats().leader_slots_fenced > fenced,
        "its leader slots meanwhile are fenced"
    );
    let best_during = n.core.status().best_slot;

    n.core.set_recording(true);
    let after = run_with_peer(&mut n, &other, &mut pending, t2, t2 + 10 * SLOT_MS);
    assert!(!after.produced.is_empty(), "it leads again");
    assert!(
        after.produced.iter().all(|s| *s >= n.genesis.slot_at(t2)),
        "no slot of the outage is produced late: {:?}",
        after.produced
    );
    assert!(
        after.sent.iter().any(|(_, s)| *s >= best_during),
        "it votes again: {:?} (best during the outage {best_during})",
        after.sent
    );
}
