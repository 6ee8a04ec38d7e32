//! The plain data the validator publishes for the RPC server: what the node knows, with no
//! behaviour. The daemon builds a fresh [`NodeSnapshot`] whenever something changes and
//! publishes it through a `tokio::sync::watch` channel; RPC requests read the latest one.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use huione_keys::Pubkey;
use serde::{Deserialize, Serialize};

/// A slot number.
pub type Slot = u64;
/// An epoch number.
pub type Epoch = u64;

/// Solana's smallest epoch length during warmup.
pub const MINIMUM_SLOTS_PER_EPOCH: u64 = 32;

/// A 32-byte hash (blockhash, bank hash), shown in base58 like Solana's `Hash`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub [u8; 32]);

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({self})")
    }
}

impl FromStr for Hash32 {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() > 44 {
            return Err(format!("{s:?} is too long for a 32-byte hash"));
        }
        let bytes = bs58::decode(s).into_vec().map_err(|e| e.to_string())?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|v: Vec<u8>| format!("{s:?} decodes to {} bytes, expected 32", v.len()))?;
        Ok(Hash32(arr))
    }
}

impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A 64-byte ed25519 signature, shown in base58.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sig64(pub [u8; 64]);

impl Default for Sig64 {
    fn default() -> Self {
        Sig64([0; 64])
    }
}

impl fmt::Display for Sig64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for Sig64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sig64({self})")
    }
}

impl From<huione_keys::Signature> for Sig64 {
    fn from(s: huione_keys::Signature) -> Self {
        Sig64(s.0)
    }
}

impl Serialize for Sig64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Sig64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() > 88 {
            return Err(serde::de::Error::custom("signature too long"));
        }
        let bytes = bs58::decode(&s)
            .into_vec()
            .map_err(serde::de::Error::custom)?;
        let arr: [u8; 64] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("signature is not 64 bytes"))?;
        Ok(Sig64(arr))
    }
}

/// One value per commitment level, as Solana's `commitment` parameter selects them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerCommitment {
    /// The node's working bank: the newest slot it has replayed.
    pub processed: u64,
    /// Voted on by a supermajority of stake.
    pub confirmed: u64,
    /// Rooted: the supermajority's roots.
    pub finalized: u64,
}

impl PerCommitment {
    pub fn get(&self, commitment: Commitment) -> u64 {
        match commitment {
            Commitment::Processed => self.processed,
            Commitment::Confirmed => self.confirmed,
            Commitment::Finalized => self.finalized,
        }
    }
}

/// Solana's commitment levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Commitment {
    Processed,
    Confirmed,
    Finalized,
}

impl Commitment {
    /// Parses a commitment name, including Solana's deprecated aliases.
    pub fn parse(s: &str) -> Option<Commitment> {
        match s {
            "processed" | "recent" => Some(Commitment::Processed),
            "confirmed" | "single" | "singleGossip" => Some(Commitment::Confirmed),
            "finalized" | "root" | "max" => Some(Commitment::Finalized),
            _ => None,
        }
    }
}

/// Solana's epoch schedule, including its warmup (short, doubling epochs at genesis).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochSchedule {
    pub slots_per_epoch: u64,
    pub leader_schedule_slot_offset: u64,
    pub warmup: bool,
    pub first_normal_epoch: Epoch,
    pub first_normal_slot: Slot,
}

impl EpochSchedule {
    /// A schedule with every epoch `slots_per_epoch` long (no warmup), as huione uses.
    pub fn without_warmup(slots_per_epoch: u64) -> Self {
        let slots_per_epoch = slots_per_epoch.max(1);
        EpochSchedule {
            slots_per_epoch,
            leader_schedule_slot_offset: slots_per_epoch,
            warmup: false,
            first_normal_epoch: 0,
            first_normal_slot: 0,
        }
    }

    /// The length of `epoch` in slots.
    pub fn slots_in_epoch(&self, epoch: Epoch) -> u64 {
        if epoch < self.first_normal_epoch {
            // Warmup epochs double from MINIMUM_SLOTS_PER_EPOCH; the exponent is < 64
            // because first_normal_epoch is derived from a u64 slots_per_epoch.
            MINIMUM_SLOTS_PER_EPOCH.saturating_mul(1u64.checked_shl(epoch as u32).unwrap_or(0))
        } else {
            self.slots_per_epoch.max(1)
        }
    }

    /// (epoch, index of `slot` within it).
    pub fn epoch_and_slot_index(&self, slot: Slot) -> (Epoch, u64) {
        if slot < self.first_normal_slot {
            // u128: a schedule with an absurd first_normal_slot must not overflow.
            let epoch = (u128::from(slot) + u128::from(MINIMUM_SLOTS_PER_EPOCH) + 1)
                .next_power_of_two()
                .trailing_zeros()
                - MINIMUM_SLOTS_PER_EPOCH.trailing_zeros()
                - 1;
            let epoch_len = u128::from(MINIMUM_SLOTS_PER_EPOCH) << epoch;
            let first = epoch_len - u128::from(MINIMUM_SLOTS_PER_EPOCH);
            (u64::from(epoch), (u128::from(slot) - first) as u64)
        } else {
            let normal = slot - self.first_normal_slot;
            let per = self.slots_per_epoch.max(1);
            (self.first_normal_epoch + normal / per, normal % per)
        }
    }

    /// The first slot of `epoch`.
    pub fn first_slot_in_epoch(&self, epoch: Epoch) -> Slot {
        if epoch <= self.first_normal_epoch {
            (1u64.checked_shl(epoch as u32).unwrap_or(0)).saturating_sub(1)
                * MINIMUM_SLOTS_PER_EPOCH
        } else {
            (epoch - self.first_normal_epoch)
                .saturating_mul(self.slots_per_epoch)
                .saturating_add(self.first_normal_slot)
        }
    }
}

/// Whether the node is healthy, as `getHealth` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    /// The node's newest slot is this many slots behind the cluster's.
    Behind {
        num_slots_behind: u64,
    },
    /// The node cannot tell (for example it has not heard from the cluster yet).
    Unknown,
}

/// One vote account, as `getVoteAccounts` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteAccountInfo {
    pub vote_pubkey: Pubkey,
    pub node_pubkey: Pubkey,
    /// Stake delegated to this vote account, active in the current epoch.
    pub activated_stake: u64,
    pub commission: u8,
    /// Whether the account is staked for the current epoch.
    pub epoch_vote_account: bool,
    /// The latest (epoch, credits, previous credits) entries, oldest first.
    pub epoch_credits: Vec<(Epoch, u64, u64)>,
    /// The most recent slot voted on (0 if none).
    pub last_vote: Slot,
    /// The account's root slot (0 if none).
    pub root_slot: Slot,
}

/// One cluster node, as `getClusterNodes` reports it (all addresses optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub pubkey: Pubkey,
    pub gossip: Option<SocketAddr>,
    pub tvu: Option<SocketAddr>,
    pub tpu: Option<SocketAddr>,
    pub tpu_quic: Option<SocketAddr>,
    pub tpu_forwards: Option<SocketAddr>,
    pub tpu_forwards_quic: Option<SocketAddr>,
    pub tpu_vote: Option<SocketAddr>,
    pub serve_repair: Option<SocketAddr>,
    pub rpc: Option<SocketAddr>,
    pub pubsub: Option<SocketAddr>,
    pub version: Option<String>,
    pub feature_set: Option<u32>,
    pub shred_version: Option<u16>,
}

/// The leader of every slot of one epoch: `slot_leaders[i]` leads the epoch's slot `i`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochLeaderSchedule {
    pub epoch: Epoch,
    pub slot_leaders: Vec<Pubkey>,
}

/// A vote as carried in a block. The RPC renders it as a Solana vote transaction: fee payer
/// and signer `authorized_voter`, accounts `[authorized_voter, vote_account, SlotHashes
/// sysvar, Clock sysvar, Vote program]`, one Vote-program instruction whose data is
/// Solana's bincode `VoteInstruction::Vote { slots, hash, timestamp }`.
///
/// `signature` is huione's signature over huione's vote message, not over the rendered
/// Solana message: clients can show it and look it up, not verify it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteTransaction {
    pub signature: Sig64,
    pub authorized_voter: Pubkey,
    pub vote_account: Pubkey,
    /// Slots voted on, oldest first.
    pub slots: Vec<Slot>,
    /// The bank hash of the newest slot in `slots`.
    pub hash: Hash32,
    /// Unix seconds the voter attached, if any.
    pub timestamp: Option<i64>,
    /// The blockhash the vote was built on (the rendered transaction's recentBlockhash).
    pub recent_blockhash: Hash32,
    pub fee: u64,
}

/// One block, for `getBlock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    pub slot: Slot,
    pub parent_slot: Slot,
    pub blockhash: Hash32,
    pub previous_blockhash: Hash32,
    pub block_height: Option<u64>,
    /// Unix seconds.
    pub block_time: Option<i64>,
    pub leader: Pubkey,
    pub votes: Vec<VoteTransaction>,
}

/// Everything the RPC server answers from. Plain data: cheap to build in tests, and
/// serializable so a snapshot can be logged or stored for a bug report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    pub identity: Pubkey,
    /// Reported as `solana-core` by `getVersion` (e.g. "huione 0.1.0").
    pub version: String,
    pub feature_set: u32,
    pub genesis_hash: Hash32,
    pub slots: PerCommitment,
    pub block_heights: PerCommitment,
    pub epoch_schedule: EpochSchedule,
    pub transaction_count: u64,
    pub health: Health,
    /// Why the node is unhealthy, when it knows (`getHealth` reports it), e.g. etcd's
    /// NOSPACE alarm with the fix.
    #[serde(default)]
    pub health_reason: Option<String>,
    pub vote_accounts: Vec<VoteAccountInfo>,
    pub cluster_nodes: Vec<ClusterNode>,
    /// The schedules the node knows (usually the current and the next epoch).
    pub leader_schedules: Vec<EpochLeaderSchedule>,
    /// Recent blocks on the node's fork, any order; slots must be unique.
    pub blocks: Vec<BlockInfo>,
    /// The oldest slot the node's ledger has a block for (`getFirstAvailableBlock`,
    /// `minimumLedgerSlot`).
    pub first_available_block: Slot,
    /// The node's ledger snapshot of its current root (the validator's checksummed file
    /// format), served at `GET /ledger-snapshot` so a new node can start from it.
    #[serde(skip)]
    pub ledger_snapshot: Option<std::sync::Arc<Vec<u8>>>,
    /// What a watchtower reads to tell a node cut off from the cluster while its RPC still
    /// answers (`huioneStatus`).
    #[serde(default)]
    pub freshness: Freshness,
}

/// Wall-clock times (ms since the Unix epoch, this node's clock) of the node's last
/// contact with the rest of the system. `huioneStatus` reports them as ages, computed when
/// it answers, so a node whose event loop stalls shows growing ages too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// When this snapshot was made.
    pub published_ms: u64,
    /// The last well-formed message from another node (peers push gossip every 500 ms).
    pub peer_message_ms: Option<u64>,
    /// The last confirmed fenced tower store (only while this node votes).
    pub tower_store_ms: Option<u64>,
}

impl NodeSnapshot {
    /// An empty snapshot for a node that has not started replaying yet.
    pub fn empty(identity: Pubkey, version: impl Into<String>) -> Self {
        NodeSnapshot {
            identity,
            version: version.into(),
            feature_set: 0,
            genesis_hash: Hash32::default(),
            slots: PerCommitment::default(),
            block_heights: PerCommitment::default(),
            epoch_schedule: EpochSchedule::without_warmup(432_000),
            transaction_count: 0,
            health: Health::Unknown,
            health_reason: None,
            vote_accounts: Vec::new(),
            cluster_nodes: Vec::new(),
            leader_schedules: Vec::new(),
            blocks: Vec::new(),
            first_available_block: 0,
            ledger_snapshot: None,
            freshness: Freshness::default(),
        }
    }

    pub fn block(&self, slot: Slot) -> Option<&BlockInfo> {
        self.blocks.iter().find(|b| b.slot == slot)
    }

    pub fn leader_schedule(&self, epoch: Epoch) -> Option<&EpochLeaderSchedule> {
        self.leader_schedules.iter().find(|s| s.epoch == epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_epochs_match_solana() {
        // Solana's schedule for 8192 slots/epoch with warmup: first normal epoch 8,
        // first normal slot 8160.
        let s = EpochSchedule {
            slots_per_epoch: 8192,
            leader_schedule_slot_offset: 8192,
            warmup: true,
            first_normal_epoch: 8,
            first_normal_slot: 8160,
        };
        assert_eq!(s.epoch_and_slot_index(0), (0, 0));
        assert_eq!(s.epoch_and_slot_index(31), (0, 31));
        assert_eq!(s.epoch_and_slot_index(32), (1, 0));
        assert_eq!(s.epoch_and_slot_index(95), (1, 63));
        assert_eq!(s.epoch_and_slot_index(96), (2, 0));
        assert_eq!(s.epoch_and_slot_index(8159), (7, 4095));
        assert_eq!(s.epoch_and_slot_index(8160), (8, 0));
        assert_eq!(s.slots_in_epoch(2), 128);
        assert_eq!(s.first_slot_in_epoch(2), 96);
        assert_eq!(s.first_slot_in_epoch(9), 8160 + 8192);
    }

    #[test]
    fn no_warmup() {
        let s = EpochSchedule::without_warmup(64);
        assert_eq!(s.epoch_and_slot_index(130), (2, 2));
        assert_eq!(s.first_slot_in_epoch(2), 128);
        assert_eq!(s.slots_in_epoch(5), 64);
    }
}
