//! Builds the RPC snapshot (`NodeSnapshot`) and the admin views from the core's state.

use huione_core::{Block, Core, Genesis, ScheduleCache, Slot};
use huione_keys::Pubkey;
use huione_rpc::{
    BlockInfo, ClusterNode, EpochLeaderSchedule, EpochSchedule, Hash32, Health, NodeSnapshot,
    PerCommitment, Sig64, VoteAccountInfo, VoteTransaction,
};

/// The version getVersion reports. A build can override it with `HUIONE_VERSION` (e.g. a
/// release tag); the upgrade test builds two versions this way.
pub const VERSION: &str = match option_env!("HUIONE_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};
/// Solana's DELINQUENT_VALIDATOR_SLOT_DISTANCE.
const DELINQUENT_SLOTS: u64 = 128;
/// Recent blocks kept in the snapshot for getBlock.
const SNAPSHOT_BLOCKS: usize = 256;

pub struct SnapshotInput<'a> {
    pub core: &'a Core,
    pub genesis: &'a Genesis,
    pub schedule: &'a mut ScheduleCache,
    /// Every node in gossip, this one included (`getClusterNodes`).
    pub peers: &'a [huione_net::ContactInfo],
    pub now_ms: u64,
    pub blocks_sent_votes: u64,
}

pub fn build(input: SnapshotInput<'_>) -> NodeSnapshot {
    let SnapshotInput {
        core,
        genesis,
        schedule,
        peers,
        now_ms,
        blocks_sent_votes,
    } = input;
    let status = core.status();
    let clock_slot = genesis.slot_at(now_ms);
    let mut snap = NodeSnapshot::empty(core.identity(), VERSION);
    snap.genesis_hash = Hash32(genesis.hash.0);
    snap.slots = PerCommitment {
        processed: status.best_slot,
        confirmed: status.optimistic_slot.max(status.root),
        finalized: status.root,
    };
    let rooted = core.rooted_chain().len() as u64;
    let above_root = core.blocks().filter(|b| b.slot > status.root).count() as u64;
    snap.block_heights = PerCommitment {
        processed: rooted + above_root,
        confirmed: rooted + above_root.min(1),
        finalized: rooted,
    };
    snap.epoch_schedule = EpochSchedule::without_warmup(genesis.slots_per_epoch);
    snap.transaction_count = blocks_sent_votes;
    snap.health = if core.caught_up(now_ms) {
        Health::Ok
    } else {
        Health::Behind {
            num_slots_behind: clock_slot.saturating_sub(status.best_slot),
        }
    };
    // Vote accounts as of the newest replayed slot (Solana's "processed"), so monitors
    // see votes within a slot or two rather than a root (~32 slots) behind.
    // (The root's bank is always in the fork tree.) Borrowed from the core rather than
    // copied with `core.ledger()`, which would copy every kept block four times a second.
    let bank = core
        .bank(status.best_slot)
        .or_else(|| core.bank(status.root));
    snap.vote_accounts = bank
        .into_iter()
        .flat_map(|b| b.accounts())
        .map(|(vote, acct)| {
            let last = acct.lockouts.last_voted_slot().unwrap_or(0);
            VoteAccountInfo {
                vote_pubkey: *vote,
                node_pubkey: acct.node,
                activated_stake: acct.stake,
                commission: 0,
                epoch_vote_account: true,
                epoch_credits: vec![(genesis.epoch_of(status.root), acct.credits, 0)],
                last_vote: last,
                root_slot: acct.lockouts.root().unwrap_or(0),
            }
        })
        .collect();
    snap.cluster_nodes = peers.iter().map(cluster_node).collect();
    // Schedules from the root's epoch to the one after the clock's, so every commitment
    // level (and a look ahead) finds its epoch; at most 4.
    let first_epoch = genesis.epoch_of(status.root);
    let last_epoch = (genesis.epoch_of(clock_slot) + 1).min(first_epoch + 3);
    snap.leader_schedules = (first_epoch..=last_epoch)
        .map(|epoch| {
            let first = epoch * genesis.slots_per_epoch;
            EpochLeaderSchedule {
                epoch,
                slot_leaders: (first..first + genesis.slots_per_epoch)
                    .map(|s| schedule.leader_at(genesis, s))
                    .collect(),
            }
        })
        .collect();
    let mut blocks: Vec<&Block> = core.blocks().collect();
    blocks.sort_by_key(|b| b.slot);
    let skip = blocks.len().saturating_sub(SNAPSHOT_BLOCKS);
    snap.first_available_block = blocks.first().map_or(0, |b| b.slot);
    snap.blocks = blocks[skip..]
        .iter()
        .map(|b| block_info(b, genesis))
        .collect();
    snap
}

fn cluster_node(c: &huione_net::ContactInfo) -> ClusterNode {
    ClusterNode {
        pubkey: c.identity,
        gossip: Some(c.gossip_addr),
        tpu_vote: c.tpu_vote_addr,
        rpc: c.rpc_addr,
        version: Some(c.version.clone()),
        feature_set: Some(0),
        shred_version: Some(0),
        ..ClusterNode::default()
    }
}

pub fn block_info(b: &Block, genesis: &Genesis) -> BlockInfo {
    BlockInfo {
        slot: b.slot,
        parent_slot: b.parent_slot,
        blockhash: Hash32(b.hash.0),
        previous_blockhash: Hash32(b.parent_hash.0),
        block_height: None,
        block_time: Some((genesis.slot_start_ms(b.slot) / 1000) as i64),
        leader: b.leader,
        votes: b
            .votes
            .iter()
            .map(|v| VoteTransaction {
                signature: Sig64(v.signature.0),
                authorized_voter: v.voter,
                vote_account: v.vote_account,
                slots: vec![v.slot],
                hash: Hash32(v.hash.0),
                timestamp: Some((v.timestamp_ms / 1000) as i64),
                recent_blockhash: Hash32(b.parent_hash.0),
                fee: 0,
            })
            .collect(),
    }
}

/// Upcoming leader slots of `identity` from `from` on, within `window` slots.
pub fn upcoming_leader_slots(
    genesis: &Genesis,
    schedule: &mut ScheduleCache,
    identity: &Pubkey,
    from: Slot,
    window: u64,
) -> Vec<Slot> {
    (from..from + window)
        .filter(|s| schedule.leader_at(genesis, *s) == *identity)
        .collect()
}

/// Percent of stake whose vote account has not voted within the last 128 slots of the
/// root bank.
pub fn delinquent_stake_percent(core: &Core, current_slot: Slot) -> f64 {
    let Some(root_bank) = core.bank(core.status().root) else {
        return 0.0;
    };
    let (mut total, mut delinquent) = (0u128, 0u128);
    for (_, a) in root_bank.accounts() {
        total += a.stake as u128;
        let last = a.lockouts.last_voted_slot().unwrap_or(0);
        if last + DELINQUENT_SLOTS < current_slot {
            delinquent += a.stake as u128;
        }
    }
    if total == 0 {
        return 0.0;
    }
    delinquent as f64 * 100.0 / total as f64
}
