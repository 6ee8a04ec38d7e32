//! Sample messages shared by the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;

use huione_core::{Block, Hash, InstanceAnnouncement, SignedVote};
use huione_keys::{Keypair, Pubkey, Signature};
use huione_net::{ContactInfo, InstanceId, Message, PullRequest, RepairRequest};

pub fn keypair(seed: u8) -> Keypair {
    Keypair::from_secret(&[seed; 32])
}

pub fn genesis() -> Hash {
    Hash::digest(&[b"test genesis"])
}

pub fn vote(seed: u8, slot: u64) -> SignedVote {
    SignedVote::sign(
        &keypair(seed),
        Pubkey::from_seed_byte(seed.wrapping_add(100)),
        keypair(seed).pubkey(),
        slot,
        Hash::digest(&[&slot.to_le_bytes()]),
        1_700_000_000_000 + slot,
    )
}

pub fn block(slot: u64, votes: usize) -> Block {
    let votes = (0..votes).map(|i| vote(i as u8, slot - 1)).collect();
    Block::produce(
        &keypair(7),
        slot,
        slot - 1,
        Hash::digest(&[b"parent"]),
        votes,
    )
}

pub fn contact_info(seed: u8, addr: SocketAddr, instance: &str, wallclock_ms: u64) -> ContactInfo {
    ContactInfo {
        identity: Pubkey::default(),
        gossip_addr: addr,
        rpc_addr: Some("127.0.0.1:8899".parse().unwrap()),
        tpu_vote_addr: Some("[::1]:8003".parse().unwrap()),
        version: "huione 0.1.0".into(),
        genesis_hash: genesis(),
        instance: InstanceId {
            id: instance.into(),
            started_ms: wallclock_ms - 1_000,
        },
        wallclock_ms,
        signature: Signature([0; 64]),
    }
    .sign(&keypair(seed))
    .unwrap()
}

/// One valid message of every kind (and both repair-request shapes).
pub fn every_message() -> Vec<Message> {
    let addr: SocketAddr = "127.0.0.1:8001".parse().unwrap();
    let mut minimal = contact_info(3, "[::1]:9".parse().unwrap(), "", 5_000);
    minimal.rpc_addr = None;
    minimal.tpu_vote_addr = None;
    minimal.version.clear();
    vec![
        Message::PushContactInfos(vec![
            contact_info(1, addr, "instance-a", 10_000),
            contact_info(2, addr, "instance-b", 20_000),
            minimal.clone(),
        ]),
        Message::PushContactInfos(vec![]),
        Message::PullRequest(PullRequest {
            from: contact_info(1, addr, "instance-a", 10_000),
            known: vec![1, 2, u64::MAX],
        }),
        Message::PullRequest(PullRequest {
            from: minimal,
            known: vec![],
        }),
        Message::Vote(vote(4, 42)),
        Message::Block(block(10, 3)),
        Message::Block(block(11, 0)),
        Message::RepairRequest(RepairRequest::Block {
            slot: 9,
            hash: Hash::digest(&[b"x"]),
        }),
        Message::RepairRequest(RepairRequest::HighestAfter { slot: u64::MAX }),
        Message::RepairResponse(block(12, 2)),
        Message::EchoRequest { nonce: 7 },
        Message::EchoReply {
            nonce: u64::MAX,
            addr: "10.1.2.3:8001".parse().unwrap(),
        },
        Message::EchoReply {
            nonce: 0,
            addr: "[::1]:9".parse().unwrap(),
        },
        Message::Announcement(InstanceAnnouncement::sign(
            &keypair(5),
            "inst-ü".into(),
            -3,
            77,
        )),
    ]
}
