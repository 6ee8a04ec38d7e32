//! The wire protocol: every datagram is one [`Message`] behind a versioned header.
//!
//! # Format (all integers little-endian)
//!
//! ```text
//! datagram  = magic "HUIO" (4) | version u8 (= 1) | kind u8 | body     (≤ MAX_DATAGRAM_BYTES)
//! kind 1  PushContactInfos  = count u16 (≤ 32) | ContactInfo*
//! kind 2  PullRequest       = ContactInfo (the requester's) | count u16 (≤ 1024) | digest u64*
//! kind 3  Vote              = SignedVote                                        (208 bytes)
//! kind 4  Block             = Block                              (178 + 208 per vote bytes)
//! kind 5  RepairRequest     = 0 u8 | slot u64 | hash [32]     (that block and its ancestors)
//!                           | 1 u8 | slot u64                 (the highest block after slot)
//! kind 6  RepairResponse    = Block
//! kind 7  Announcement      = identity [32] | instance id str (≤ 128) | fence revision i64
//!                             | since_ms u64 | signature [64]
//! kind 8  EchoRequest       = nonce u64 | zero padding [32]  (never shorter than its reply)
//! kind 9  EchoReply         = nonce u64 | addr             (the request's observed source)
//!
//! SignedVote  = vote account [32] | voter [32] | node [32] | slot u64 | hash [32]
//!               | timestamp_ms u64 | signature [64]
//! Block       = slot u64 | parent slot u64 | parent hash [32] | leader [32]
//!               | count u16 (≤ 256) | SignedVote* | hash [32] | signature [64]
//! ContactInfo = identity [32] | gossip addr | rpc opt-addr | tpu/vote opt-addr
//!               | version str (≤ 32) | genesis hash [32] | instance id str (≤ 128)
//!               | instance started_ms u64 | wallclock_ms u64 | signature [64]
//! addr        = 4 u8 | ipv4 [4] | port u16   or   6 u8 | ipv6 [16] | port u16
//! opt-addr    = 0 u8 (absent) | addr
//! str         = len u8 | UTF-8 bytes
//! ```
//!
//! A block with the most votes the core accepts ([`MAX_VOTES_PER_BLOCK`] = 256) is
//! 6 + 178 + 256 × 208 = 53 432 bytes, under the 61 440-byte datagram limit (and under
//! the 65 507-byte IPv4 UDP maximum; the loopback MTU of 65 536 carries it unfragmented).
//! Anything longer is rejected before it is parsed.
//!
//! Decoding never panics and never allocates more than the datagram could hold: every
//! count is checked against its cap and against the bytes left before a vector is built.
//! Contact infos carry signatures checked by [`ContactInfo::verify`]; blocks, votes and
//! announcements are verified by the core (it knows the leader schedule and voters).

use std::net::SocketAddr;

use huione_core::{Block, Hash, InstanceAnnouncement, SignedVote, Slot, MAX_VOTES_PER_BLOCK};
use huione_keys::{Pubkey, Signature};

use crate::codec::{Reader, Writer};
use crate::contact::{
    ContactInfo, MAX_CONTACT_INFO_BYTES, MAX_INSTANCE_ID_LEN, MIN_CONTACT_INFO_BYTES,
};
use crate::stats::DropReason;

/// First four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"HUIO";
/// The wire version this build speaks. A datagram with another version is dropped.
pub const WIRE_VERSION: u8 = 1;
/// Magic, version and kind.
pub const HEADER_BYTES: usize = 6;
/// Largest datagram sent or accepted (60 KiB).
pub const MAX_DATAGRAM_BYTES: usize = 60 * 1024;
/// Contact infos in one push datagram.
pub const MAX_PUSH_BATCH: usize = 32;
/// Record digests in one pull request (also the most peers a pull can say it knows).
pub const MAX_PULL_DIGEST: usize = 1024;
/// Encoded size of a [`SignedVote`].
pub const VOTE_BYTES: usize = 3 * 32 + 8 + 32 + 8 + 64;
/// Encoded size of a block without its votes.
pub const BLOCK_FIXED_BYTES: usize = 8 + 8 + 32 + 32 + 2 + 32 + 64;
/// Encoded size of the largest block the core accepts.
pub const MAX_BLOCK_BYTES: usize = BLOCK_FIXED_BYTES + MAX_VOTES_PER_BLOCK * VOTE_BYTES;
const MIN_ANNOUNCEMENT_BYTES: usize = 32 + 1 + 8 + 8 + 64;

const _: () = assert!(HEADER_BYTES + MAX_BLOCK_BYTES <= MAX_DATAGRAM_BYTES);
const _: () =
    assert!(HEADER_BYTES + 2 + MAX_PUSH_BATCH * MAX_CONTACT_INFO_BYTES <= MAX_DATAGRAM_BYTES);
const _: () =
    assert!(HEADER_BYTES + MAX_CONTACT_INFO_BYTES + 2 + MAX_PULL_DIGEST * 8 <= MAX_DATAGRAM_BYTES);
const _: () = assert!(MAX_DATAGRAM_BYTES < 65_507);

/// What a repair request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepairRequest {
    /// The block (`slot`, `hash`) and its ancestors (the core's `RequestRepair`).
    Block { slot: Slot, hash: Hash },
    /// The highest block the peer has above `slot` (catching up after a restart).
    HighestAfter { slot: Slot },
}

/// "Here is who I am; send me the records I do not have."
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// The requester's own signed record (the responder learns it too).
    pub from: ContactInfo,
    /// [`ContactInfo::digest`] of every record the requester holds.
    pub known: Vec<u64>,
}

/// One datagram's worth of protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    PushContactInfos(Vec<ContactInfo>),
    PullRequest(PullRequest),
    Vote(SignedVote),
    Block(Block),
    RepairRequest(RepairRequest),
    RepairResponse(Block),
    Announcement(InstanceAnnouncement),
    /// "Which address do you see me at?" (learning the advertised address from an
    /// entrypoint). Padded so the reply is never larger than the request.
    EchoRequest {
        nonce: u64,
    },
    /// The answer: the source address the request arrived from.
    EchoReply {
        nonce: u64,
        addr: SocketAddr,
    },
}

/// Zero bytes after an echo request's nonce.
pub const ECHO_PADDING: usize = 32;

impl Message {
    /// A short name for logs and metrics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::PushContactInfos(_) => "push",
            Message::PullRequest(_) => "pull",
            Message::Vote(_) => "vote",
            Message::Block(_) => "block",
            Message::RepairRequest(_) => "repair-request",
            Message::RepairResponse(_) => "repair-response",
            Message::Announcement(_) => "announcement",
            Message::EchoRequest { .. } => "echo-request",
            Message::EchoReply { .. } => "echo-reply",
        }
    }
}

/// Why a datagram could not be decoded. Every variant is counted by [`DropReason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {len} bytes is over the {MAX_DATAGRAM_BYTES}-byte limit")]
    Oversize { len: usize },
    #[error("datagram ends before the message does")]
    Truncated,
    #[error("not a huione datagram (bad magic)")]
    BadMagic,
    #[error("wire version {0} is not supported (this node speaks {WIRE_VERSION}); upgrade the older node")]
    UnsupportedVersion(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("{what}: {count} items, at most {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{what}: {len} bytes, at most {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} is not UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("{what}: invalid tag {tag}")]
    InvalidTag { what: &'static str, tag: u8 },
    #[error("{0} bytes after the end of the message")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// The counter this error increments.
    pub fn reason(&self) -> DropReason {
        match self {
            DecodeError::Oversize { .. } => DropReason::Oversize,
            DecodeError::Truncated => DropReason::Truncated,
            DecodeError::BadMagic => DropReason::BadMagic,
            DecodeError::UnsupportedVersion(_) => DropReason::UnsupportedVersion,
            DecodeError::UnknownKind(_) => DropReason::UnknownKind,
            DecodeError::TooMany { .. } | DecodeError::TooLong { .. } => DropReason::OverLimit,
            DecodeError::InvalidUtf8 { .. }
            | DecodeError::InvalidTag { .. }
            | DecodeError::TrailingBytes(_) => DropReason::Malformed,
        }
    }
}

/// Why a message could not be encoded: it breaks a wire limit, and a peer would drop it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{what}: {count} items, at most {max} fit the wire format")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{what}: {len} bytes, at most {max} fit the wire format")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "the message encodes to {len} bytes, over the {MAX_DATAGRAM_BYTES}-byte datagram limit"
    )]
    TooLarge { len: usize },
}

mod kind {
    pub const PUSH: u8 = 1;
    pub const PULL: u8 = 2;
    pub const VOTE: u8 = 3;
    pub const BLOCK: u8 = 4;
    pub const REPAIR_REQUEST: u8 = 5;
    pub const REPAIR_RESPONSE: u8 = 6;
    pub const ANNOUNCEMENT: u8 = 7;
    pub const ECHO_REQUEST: u8 = 8;
    pub const ECHO_REPLY: u8 = 9;
}

/// Encodes one datagram.
pub fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer::with_capacity(256);
    w.bytes(&MAGIC);
    w.u8(WIRE_VERSION);
    match msg {
        Message::PushContactInfos(infos) => {
            w.u8(kind::PUSH);
            put_count(&mut w, "contact infos", infos.len(), MAX_PUSH_BATCH)?;
            for ci in infos {
                ci.encode(&mut w)?;
            }
        }
        Message::PullRequest(p) => {
            w.u8(kind::PULL);
            p.from.encode(&mut w)?;
            put_count(&mut w, "pull digest", p.known.len(), MAX_PULL_DIGEST)?;
            for d in &p.known {
                w.u64(*d);
            }
        }
        Message::Vote(v) => {
            w.u8(kind::VOTE);
            put_vote(&mut w, v);
        }
        Message::Block(b) => {
            w.u8(kind::BLOCK);
            put_block(&mut w, b)?;
        }
        Message::RepairRequest(r) => {
            w.u8(kind::REPAIR_REQUEST);
            match r {
                RepairRequest::Block { slot, hash } => {
                    w.u8(0);
                    w.u64(*slot);
                    w.bytes(&hash.0);
                }
                RepairRequest::HighestAfter { slot } => {
                    w.u8(1);
                    w.u64(*slot);
                }
            }
        }
        Message::RepairResponse(b) => {
            w.u8(kind::REPAIR_RESPONSE);
            put_block(&mut w, b)?;
        }
        Message::Announcement(a) => {
            w.u8(kind::ANNOUNCEMENT);
            if a.instance_id.len() > MAX_INSTANCE_ID_LEN {
                return Err(EncodeError::TooLong {
                    what: "instance id",
                    len: a.instance_id.len(),
                    max: MAX_INSTANCE_ID_LEN,
                });
            }
            w.bytes(a.identity.as_bytes());
            w.short_str(&a.instance_id);
            w.i64(a.fence_revision);
            w.u64(a.since_ms);
            w.bytes(&a.signature.0);
        }
        Message::EchoRequest { nonce } => {
            w.u8(kind::ECHO_REQUEST);
            w.u64(*nonce);
            w.bytes(&[0; ECHO_PADDING]);
        }
        Message::EchoReply { nonce, addr } => {
            w.u8(kind::ECHO_REPLY);
            w.u64(*nonce);
            w.addr(addr);
        }
    }
    if w.buf.len() > MAX_DATAGRAM_BYTES {
        return Err(EncodeError::TooLarge { len: w.buf.len() });
    }
    Ok(w.buf)
}

/// Decodes one datagram. Never panics; any input that is not exactly one well-formed
/// message of this wire version is an error.
pub fn decode(datagram: &[u8]) -> Result<Message, DecodeError> {
    if datagram.len() > MAX_DATAGRAM_BYTES {
        return Err(DecodeError::Oversize {
            len: datagram.len(),
        });
    }
    let mut r = Reader::new(datagram);
    if r.array::<4>()? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let msg = match r.u8()? {
        kind::PUSH => {
            let n = r.count("contact infos", MAX_PUSH_BATCH, MIN_CONTACT_INFO_BYTES)?;
            let mut infos = Vec::with_capacity(n);
            for _ in 0..n {
                infos.push(ContactInfo::decode(&mut r)?);
            }
            Message::PushContactInfos(infos)
        }
        kind::PULL => {
            let from = ContactInfo::decode(&mut r)?;
            let n = r.count("pull digest", MAX_PULL_DIGEST, 8)?;
            let mut known = Vec::with_capacity(n);
            for _ in 0..n {
                known.push(r.u64()?);
            }
            Message::PullRequest(PullRequest { from, known })
        }
        kind::VOTE => Message::Vote(get_vote(&mut r)?),
        kind::BLOCK => Message::Block(get_block(&mut r)?),
        kind::REPAIR_REQUEST => Message::RepairRequest(match r.u8()? {
            0 => RepairRequest::Block {
                slot: r.u64()?,
                hash: Hash(r.array()?),
            },
            1 => RepairRequest::HighestAfter { slot: r.u64()? },
            tag => {
                return Err(DecodeError::InvalidTag {
                    what: "repair request",
                    tag,
                })
            }
        }),
        kind::REPAIR_RESPONSE => Message::RepairResponse(get_block(&mut r)?),
        kind::ANNOUNCEMENT => {
            if r.remaining() < MIN_ANNOUNCEMENT_BYTES {
                return Err(DecodeError::Truncated);
            }
            Message::Announcement(InstanceAnnouncement {
                identity: Pubkey(r.array()?),
                instance_id: r.short_str("instance id", MAX_INSTANCE_ID_LEN)?,
                fence_revision: r.i64()?,
                since_ms: r.u64()?,
                signature: Signature(r.array()?),
            })
        }
        kind::ECHO_REQUEST => {
            let nonce = r.u64()?;
            if r.array::<ECHO_PADDING>()? != [0; ECHO_PADDING] {
                return Err(DecodeError::InvalidTag {
                    what: "echo request padding",
                    tag: 1,
                });
            }
            Message::EchoRequest { nonce }
        }
        kind::ECHO_REPLY => Message::EchoReply {
            nonce: r.u64()?,
            addr: r.addr("echoed address")?,
        },
        other => return Err(DecodeError::UnknownKind(other)),
    };
    match r.remaining() {
        0 => Ok(msg),
        n => Err(DecodeError::TrailingBytes(n)),
    }
}

fn put_count(
    w: &mut Writer,
    what: &'static str,
    count: usize,
    max: usize,
) -> Result<(), EncodeError> {
    if count > max {
        return Err(EncodeError::TooMany { what, count, max });
    }
    w.u16(count as u16);
    Ok(())
}

fn put_vote(w: &mut Writer, v: &SignedVote) {
    w.bytes(v.vote_account.as_bytes());
    w.bytes(v.voter.as_bytes());
    w.bytes(v.node.as_bytes());
    w.u64(v.slot);
    w.bytes(&v.hash.0);
    w.u64(v.timestamp_ms);
    w.bytes(&v.signature.0);
}

fn get_vote(r: &mut Reader<'_>) -> Result<SignedVote, DecodeError> {
    Ok(SignedVote {
        vote_account: Pubkey(r.array()?),
        voter: Pubkey(r.array()?),
        node: Pubkey(r.array()?),
        slot: r.u64()?,
        hash: Hash(r.array()?),
        timestamp_ms: r.u64()?,
        signature: Signature(r.array()?),
    })
}

fn put_block(w: &mut Writer, b: &Block) -> Result<(), EncodeError> {
    w.buf
        .reserve(BLOCK_FIXED_BYTES + b.votes.len().min(MAX_VOTES_PER_BLOCK) * VOTE_BYTES);
    w.u64(b.slot);
    w.u64(b.parent_slot);
    w.bytes(&b.parent_hash.0);
    w.bytes(b.leader.as_bytes());
    put_count(w, "block votes", b.votes.len(), MAX_VOTES_PER_BLOCK)?;
    for v in &b.votes {
        put_vote(w, v);
    }
    w.bytes(&b.hash.0);
    w.bytes(&b.signature.0);
    Ok(())
}

fn get_block(r: &mut Reader<'_>) -> Result<Block, DecodeError> {
    let slot = r.u64()?;
    let parent_slot = r.u64()?;
    let parent_hash = Hash(r.array()?);
    let leader = Pubkey(r.array()?);
    let n = r.count("block votes", MAX_VOTES_PER_BLOCK, VOTE_BYTES)?;
    let mut votes = Vec::with_capacity(n);
    for _ in 0..n {
        votes.push(get_vote(r)?);
    }
    Ok(Block {
        slot,
        parent_slot,
        parent_hash,
        leader,
        votes,
        hash: Hash(r.array()?),
        signature: Signature(r.array()?),
    })
}
