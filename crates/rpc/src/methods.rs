//! Solana's RPC methods, answered from a [`NodeSnapshot`]. Pure functions: a method name,
//! its params and a snapshot in, a JSON result or a JSON-RPC error out.

use std::collections::BTreeMap;

use huione_keys::Pubkey;
use serde_json::{json, Map, Value};

use crate::block::{render_block, BlockOptions, Encoding, TransactionDetails};
use crate::jsonrpc::{positional, RpcError};
use crate::snapshot::{Commitment, Health, NodeSnapshot, Slot};

/// Solana's custom server error codes that we use.
pub const BLOCK_CLEANED_UP: i64 = -32001;
pub const BLOCK_NOT_AVAILABLE: i64 = -32004;
pub const NODE_UNHEALTHY: i64 = -32005;
pub const SLOT_SKIPPED: i64 = -32007;
pub const MIN_CONTEXT_SLOT_NOT_REACHED: i64 = -32016;

/// A vote account whose last vote is this many slots behind is delinquent (Solana's
/// `DELINQUENT_VALIDATOR_SLOT_DISTANCE`).
pub const DELINQUENT_VALIDATOR_SLOT_DISTANCE: u64 = 128;

/// Every method this server answers, for metrics labels and docs.
pub const METHODS: &[&str] = &[
    "getHealth",
    "getSlot",
    "getIdentity",
    "getVersion",
    "getEpochInfo",
    "getEpochSchedule",
    "getVoteAccounts",
    "getClusterNodes",
    "getLeaderSchedule",
    "getBlockHeight",
    "getBlock",
    "getGenesisHash",
    "getFirstAvailableBlock",
    "minimumLedgerSlot",
    "getTransactionCount",
    "huioneStatus",
];

/// Answers one call.
pub fn call(method: &str, params: &Value, snap: &NodeSnapshot) -> Result<Value, RpcError> {
    match method {
        "getHealth" => {
            positional(params, 0)?;
            get_health(snap)
        }
        "getSlot" => at_commitment(params, snap, |s, c| json!(s.slots.get(c))),
        "getBlockHeight" => at_commitment(params, snap, |s, c| json!(s.block_heights.get(c))),
        "getTransactionCount" => at_commitment(params, snap, |s, _| json!(s.transaction_count)),
        "getEpochInfo" => at_commitment(params, snap, epoch_info),
        "getIdentity" => {
            positional(params, 0)?;
            Ok(json!({ "identity": snap.identity.to_string() }))
        }
        "getVersion" => {
            positional(params, 0)?;
            Ok(json!({ "solana-core": snap.version, "feature-set": snap.feature_set }))
        }
        "getGenesisHash" => {
            positional(params, 0)?;
            Ok(json!(snap.genesis_hash.to_string()))
        }
        "getFirstAvailableBlock" | "minimumLedgerSlot" => {
            positional(params, 0)?;
            Ok(json!(snap.first_available_block))
        }
        "getEpochSchedule" => {
            positional(params, 0)?;
            let s = &snap.epoch_schedule;
            Ok(json!({
                "slotsPerEpoch": s.slots_per_epoch,
                "leaderScheduleSlotOffset": s.leader_schedule_slot_offset,
                "warmup": s.warmup,
                "firstNormalEpoch": s.first_normal_epoch,
                "firstNormalSlot": s.first_normal_slot,
            }))
        }
        "getVoteAccounts" => vote_accounts(params, snap),
        "getClusterNodes" => {
            positional(params, 0)?;
            Ok(cluster_nodes(snap))
        }
        "getLeaderSchedule" => leader_schedule(params, snap),
        "getBlock" => get_block(params, snap),
        "huioneStatus" => {
            positional(params, 0)?;
            // Ages against the answering node's own clock, the one that stamped them.
            Ok(huione_status(snap, huione_os::clock::now_ms()))
        }
        _ => Err(RpcError::method_not_found()),
    }
}

/// huione's own method (not Solana's): how long ago this node last heard from another
/// node, confirmed a tower store and refreshed its snapshot, as ages in ms at `now_ms`
/// (`null`: never). A watchtower reads it to tell a primary cut off from the cluster whose
/// RPC still answers (README, "Failover monitoring").
pub fn huione_status(snap: &NodeSnapshot, now_ms: u64) -> Value {
    let f = &snap.freshness;
    let age = |t: Option<u64>| t.map(|t| now_ms.saturating_sub(t));
    json!({
        "identity": snap.identity.to_string(),
        "slot": snap.slots.processed,
        "peerMessageAgeMs": age(f.peer_message_ms),
        "towerStoreAgeMs": age(f.tower_store_ms),
        "snapshotAgeMs": age(Some(f.published_ms).filter(|&t| t > 0)),
    })
}

fn get_health(snap: &NodeSnapshot) -> Result<Value, RpcError> {
    match snap.health {
        Health::Ok => Ok(json!("ok")),
        Health::Behind { num_slots_behind } => Err(RpcError::new(
            NODE_UNHEALTHY,
            format!("Node is behind by {num_slots_behind} slots"),
        )
        .with_data(json!({ "numSlotsBehind": num_slots_behind }))),
        Health::Unknown => match &snap.health_reason {
            Some(reason) => Err(RpcError::new(
                NODE_UNHEALTHY,
                format!("Node is unhealthy: {reason}"),
            )
            .with_data(json!({ "numSlotsBehind": null, "reason": reason }))),
            None => Err(RpcError::new(NODE_UNHEALTHY, "Node is unhealthy")
                .with_data(json!({ "numSlotsBehind": null }))),
        },
    }
}

/// A config object (or null/absent) at position `i`.
fn config_at(params: &[Value], i: usize) -> Result<Map<String, Value>, RpcError> {
    match params.get(i) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(RpcError::invalid_params(
            "invalid type: expected a config object",
        )),
    }
}

fn commitment(cfg: &Map<String, Value>) -> Result<Commitment, RpcError> {
    match cfg.get("commitment") {
        None | Some(Value::Null) => Ok(Commitment::Finalized),
        Some(Value::String(s)) => Commitment::parse(s).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "unknown variant `{s}`, expected one of `processed`, `confirmed`, `finalized`"
            ))
        }),
        Some(_) => Err(RpcError::invalid_params("commitment must be a string")),
    }
}

fn opt_u64(cfg: &Map<String, Value>, key: &str) -> Result<Option<u64>, RpcError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| RpcError::invalid_params(format!("{key} must be an unsigned integer"))),
    }
}

fn opt_bool(cfg: &Map<String, Value>, key: &str) -> Result<Option<bool>, RpcError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RpcError::invalid_params(format!("{key} must be a boolean"))),
    }
}

fn opt_pubkey(cfg: &Map<String, Value>, key: &str) -> Result<Option<Pubkey>, RpcError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| RpcError::new(crate::jsonrpc::INVALID_PARAMS, "Invalid param: Invalid")),
        Some(_) => Err(RpcError::invalid_params(format!("{key} must be a string"))),
    }
}

fn check_min_context_slot(cfg: &Map<String, Value>, context_slot: Slot) -> Result<(), RpcError> {
    if let Some(min) = opt_u64(cfg, "minContextSlot")? {
        if context_slot < min {
            return Err(RpcError::new(
                MIN_CONTEXT_SLOT_NOT_REACHED,
                "Minimum context slot has not been reached",
            )
            .with_data(json!({ "contextSlot": context_slot })));
        }
    }
    Ok(())
}

/// Methods whose only parameter is `{commitment, minContextSlot}`.
fn at_commitment(
    params: &Value,
    snap: &NodeSnapshot,
    f: impl Fn(&NodeSnapshot, Commitment) -> Value,
) -> Result<Value, RpcError> {
    let p = positional(params, 1)?;
    let cfg = config_at(&p, 0)?;
    let c = commitment(&cfg)?;
    check_min_context_slot(&cfg, snap.slots.get(c))?;
    Ok(f(snap, c))
}

fn epoch_info(snap: &NodeSnapshot, c: Commitment) -> Value {
    let slot = snap.slots.get(c);
    let (epoch, slot_index) = snap.epoch_schedule.epoch_and_slot_index(slot);
    json!({
        "absoluteSlot": slot,
        "blockHeight": snap.block_heights.get(c),
        "epoch": epoch,
        "slotIndex": slot_index,
        "slotsInEpoch": snap.epoch_schedule.slots_in_epoch(epoch),
        "transactionCount": snap.transaction_count,
    })
}

fn vote_accounts(params: &Value, snap: &NodeSnapshot) -> Result<Value, RpcError> {
    let p = positional(params, 1)?;
    let cfg = config_at(&p, 0)?;
    let c = commitment(&cfg)?;
    let slot = snap.slots.get(c);
    let filter = opt_pubkey(&cfg, "votePubkey")?;
    let keep_unstaked = opt_bool(&cfg, "keepUnstakedDelinquents")?.unwrap_or(false);
    let distance =
        opt_u64(&cfg, "delinquentSlotDistance")?.unwrap_or(DELINQUENT_VALIDATOR_SLOT_DISTANCE);
    let mut current = Vec::new();
    let mut delinquent = Vec::new();
    for a in &snap.vote_accounts {
        if filter.is_some_and(|f| f != a.vote_pubkey) {
            continue;
        }
        let info = json!({
            "votePubkey": a.vote_pubkey.to_string(),
            "nodePubkey": a.node_pubkey.to_string(),
            "activatedStake": a.activated_stake,
            "epochVoteAccount": a.epoch_vote_account,
            "commission": a.commission,
            "lastVote": a.last_vote,
            "epochCredits": a.epoch_credits.iter().map(|(e, c, p)| json!([e, c, p])).collect::<Vec<_>>(),
            "rootSlot": a.root_slot,
        });
        if a.last_vote > slot.saturating_sub(distance) {
            current.push(info);
        } else if keep_unstaked || a.activated_stake > 0 {
            delinquent.push(info);
        }
    }
    Ok(json!({ "current": current, "delinquent": delinquent }))
}

fn cluster_nodes(snap: &NodeSnapshot) -> Value {
    let addr = |a: &Option<std::net::SocketAddr>| a.map(|a| a.to_string());
    Value::Array(
        snap.cluster_nodes
            .iter()
            .map(|n| {
                json!({
                    "pubkey": n.pubkey.to_string(),
                    "gossip": addr(&n.gossip),
                    "tvu": addr(&n.tvu),
                    "tpu": addr(&n.tpu),
                    "tpuQuic": addr(&n.tpu_quic),
                    "tpuForwards": addr(&n.tpu_forwards),
                    "tpuForwardsQuic": addr(&n.tpu_forwards_quic),
                    "tpuVote": addr(&n.tpu_vote),
                    "serveRepair": addr(&n.serve_repair),
                    "rpc": addr(&n.rpc),
                    "pubsub": addr(&n.pubsub),
                    "version": n.version,
                    "featureSet": n.feature_set,
                    "shredVersion": n.shred_version,
                })
            })
            .collect(),
    )
}

fn leader_schedule(params: &Value, snap: &NodeSnapshot) -> Result<Value, RpcError> {
    let p = positional(params, 2)?;
    // Solana accepts [slot?, config?] and also [config].
    let (slot, cfg) = match p.first() {
        None | Some(Value::Null) => (None, config_at(&p, 1)?),
        Some(Value::Number(n)) => {
            let slot = n
                .as_u64()
                .ok_or_else(|| RpcError::invalid_params("slot must be an unsigned integer"))?;
            (Some(slot), config_at(&p, 1)?)
        }
        Some(Value::Object(m)) if p.len() == 1 => (None, m.clone()),
        Some(_) => return Err(RpcError::invalid_params("invalid type: expected a slot")),
    };
    let c = commitment(&cfg)?;
    let slot = slot.unwrap_or_else(|| snap.slots.get(c));
    let identity = opt_pubkey(&cfg, "identity")?;
    let (epoch, _) = snap.epoch_schedule.epoch_and_slot_index(slot);
    let Some(schedule) = snap.leader_schedule(epoch) else {
        return Ok(Value::Null);
    };
    let mut by_leader: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, leader) in schedule.slot_leaders.iter().enumerate() {
        if identity.is_some_and(|id| id != *leader) {
            continue;
        }
        by_leader.entry(leader.to_string()).or_default().push(i);
    }
    Ok(json!(by_leader))
}

fn block_options(p: &[Value]) -> Result<(BlockOptions, Commitment), RpcError> {
    let mut opts = BlockOptions::default();
    let cfg = match p.get(1) {
        // The deprecated form: a bare encoding string.
        Some(Value::String(e)) => {
            let mut m = Map::new();
            m.insert("encoding".into(), Value::String(e.clone()));
            m
        }
        _ => config_at(p, 1)?,
    };
    if let Some(e) = cfg.get("encoding").filter(|v| !v.is_null()) {
        let s = e.as_str().unwrap_or_default();
        opts.encoding = Encoding::parse(s).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "unknown variant `{s}`, expected one of `binary`, `base64`, `base58`, `json`, `jsonParsed`"
            ))
        })?;
    }
    if let Some(d) = cfg.get("transactionDetails").filter(|v| !v.is_null()) {
        let s = d.as_str().unwrap_or_default();
        opts.details = TransactionDetails::parse(s).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "unknown variant `{s}`, expected one of `full`, `signatures`, `none`, `accounts`"
            ))
        })?;
    }
    if let Some(r) = opt_bool(&cfg, "rewards")? {
        opts.rewards = r;
    }
    if let Some(v) = opt_u64(&cfg, "maxSupportedTransactionVersion")? {
        let v = u8::try_from(v)
            .map_err(|_| RpcError::invalid_params("maxSupportedTransactionVersion too large"))?;
        opts.max_supported_transaction_version = Some(v);
    }
    let c = commitment(&cfg)?;
    if c == Commitment::Processed {
        return Err(RpcError::invalid_params(
            "Method does not support commitment below `confirmed`",
        ));
    }
    Ok((opts, c))
}

fn get_block(params: &Value, snap: &NodeSnapshot) -> Result<Value, RpcError> {
    let p = positional(params, 2)?;
    let slot = p
        .first()
        .and_then(Value::as_u64)
        .ok_or_else(|| RpcError::invalid_params("expected a slot (unsigned integer)"))?;
    let (opts, c) = block_options(&p)?;
    let not_available = || {
        RpcError::new(
            BLOCK_NOT_AVAILABLE,
            format!("Block not available for slot {slot}"),
        )
    };
    if slot > snap.slots.get(c) {
        return Err(not_available());
    }
    if slot < snap.first_available_block {
        return Err(RpcError::new(
            BLOCK_CLEANED_UP,
            format!(
                "Block {slot} cleaned up, does not exist on node. First available block: {}",
                snap.first_available_block
            ),
        ));
    }
    if let Some(block) = snap.block(slot) {
        return Ok(render_block(block, &opts));
    }
    // Within the window of recent blocks the node published, a missing slot was skipped;
    // older than that window, the node has it on disk but does not serve it.
    let oldest_recent = snap.blocks.iter().map(|b| b.slot).min();
    match oldest_recent {
        Some(oldest) if slot > oldest => Err(RpcError::new(
            SLOT_SKIPPED,
            format!("Slot {slot} was skipped, or missing due to ledger jump to recent snapshot"),
        )),
        _ => Err(not_available()),
    }
}
