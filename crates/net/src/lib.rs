//! huione-net: the validator's network slice — a bounded binary wire protocol, a UDP
//! transport on the gossip port, and CRDS-lite gossip of signed contact info.
//!
//! ```text
//! UDP datagram ─▶ wire::decode (size, magic, version, caps; never panics)
//!   ├─ PushContactInfos / PullRequest ─▶ Gossip (verify, newest-wins table, replies)
//!   │                                      └─▶ NetEvent::DuplicateInstance
//!   └─ Vote / Block / RepairRequest / RepairResponse / Announcement ─▶ NetEvent
//!                                           ─▶ bounded mpsc ─▶ daemon ─▶ huione-core
//! daemon ─▶ NetHandle::{broadcast_vote, broadcast_block, send_repair_*, …} ─▶ UDP
//! ```
//!
//! # Invariants
//! - Nothing received can panic the node, allocate more than the datagram could hold,
//!   or block the receive loop: drops are counted in [`NetStats`] by [`DropReason`] and
//!   logged at most once per reason per interval.
//! - Contact infos are accepted only when signed by their identity and for our genesis
//!   hash. Blocks, votes and announcements are passed on unverified; the core verifies
//!   them (it knows the schedule and the voters).
//! - [`Gossip`] (the protocol logic) does no I/O and reads no clock; [`Transport`] is
//!   the thin tokio driver around it.

pub mod addressing;
mod codec;
mod contact;
mod gossip;
mod stats;
mod transport;
mod wire;

pub use contact::{
    ContactInfo, InstanceId, VerifyError, MAX_CONTACT_INFO_BYTES, MAX_INSTANCE_ID_LEN,
    MAX_VERSION_LEN,
};
pub use gossip::{
    CrdsTable, DuplicateInstance, Gossip, GossipConfig, NodeInfo, Outgoing, Output,
    MAX_PULL_RESPONSE_DATAGRAMS,
};
pub use stats::{DropReason, NetStats, NetStatsSnapshot};
pub use transport::{learn_own_address, NetConfig, NetError, NetEvent, NetHandle, Transport};
pub use wire::{
    decode, encode, DecodeError, EncodeError, Message, PullRequest, RepairRequest,
    BLOCK_FIXED_BYTES, ECHO_PADDING, HEADER_BYTES, MAGIC, MAX_BLOCK_BYTES, MAX_DATAGRAM_BYTES,
    MAX_PULL_DIGEST, MAX_PUSH_BATCH, VOTE_BYTES, WIRE_VERSION,
};
