//! Wire types: signed votes and signed blocks, and how their signatures are checked.
//!
//! Everything received is untrusted. [`Block::check_integrity`] recomputes the hash and
//! checks the leader's signature; [`SignedVote::check_signature`] checks the voter's.
//! Signature checks go through [`SigVerifier`] so that a simulator can share one cache of
//! verified signatures between many in-process nodes (each signature is still checked).

use huione_keys::{Keypair, Pubkey, Signature};
use huione_tower::Slot;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hash::{sig_hex, Hash};

/// Votes one block may carry; a block with more is dropped.
pub const MAX_VOTES_PER_BLOCK: usize = 256;

/// Length of a vote's signed message: tag, three keys, slot, hash, timestamp.
const VOTE_MESSAGE_LEN: usize = 11 + 3 * 32 + 8 + 32 + 8;

/// Checks ed25519 signatures, and makes the core's vote and block signatures.
pub trait SigVerifier: Send + Sync {
    fn verify(&self, signer: &Pubkey, message: &[u8], signature: &Signature) -> bool;

    /// Signs `message` with `key`: ed25519 unless overridden. Only a simulator overrides
    /// it, with a scheme its own [`SigVerifier::verify`] checks exactly (a signature by
    /// any other key still fails).
    fn sign(&self, key: &Keypair, message: &[u8]) -> Signature {
        key.sign(message)
    }
}

/// The plain verifier: every call runs ed25519.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ed25519Verifier;

impl SigVerifier for Ed25519Verifier {
    fn verify(&self, signer: &Pubkey, message: &[u8], signature: &Signature) -> bool {
        signature.verify(signer, message)
    }
}

/// A vote transaction: `vote_account` votes for block `hash` at `slot`, signed by the
/// account's authorized voter. `node` and `timestamp_ms` are informational.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVote {
    pub vote_account: Pubkey,
    pub voter: Pubkey,
    pub node: Pubkey,
    pub slot: Slot,
    pub hash: Hash,
    pub timestamp_ms: u64,
    #[serde(with = "sig_hex")]
    pub signature: Signature,
}

impl SignedVote {
    /// Builds and signs a vote. Signing is not sending: only the core's store-confirmed
    /// path turns a vote into a `SendVote` command.
    pub fn sign(
        voter: &Keypair,
        vote_account: Pubkey,
        node: Pubkey,
        slot: Slot,
        hash: Hash,
        timestamp_ms: u64,
    ) -> Self {
        Self::sign_with(
            &Ed25519Verifier,
            voter,
            vote_account,
            node,
            slot,
            hash,
            timestamp_ms,
        )
    }

    /// [`SignedVote::sign`] through `signer` (see [`SigVerifier::sign`]).
    pub fn sign_with(
        signer: &dyn SigVerifier,
        voter: &Keypair,
        vote_account: Pubkey,
        node: Pubkey,
        slot: Slot,
        hash: Hash,
        timestamp_ms: u64,
    ) -> Self {
        let mut v = SignedVote {
            vote_account,
            voter: voter.pubkey(),
            node,
            slot,
            hash,
            timestamp_ms,
            signature: Signature([0; 64]),
        };
        v.signature = signer.sign(voter, &v.message_bytes());
        v
    }

    /// The signed bytes.
    pub fn message(&self) -> Vec<u8> {
        self.message_bytes().to_vec()
    }

    /// [`SignedVote::message`] without a heap allocation (it is built for every vote
    /// received, checked and hashed into a block).
    fn message_bytes(&self) -> [u8; VOTE_MESSAGE_LEN] {
        let mut m = [0u8; VOTE_MESSAGE_LEN];
        let parts: [&[u8]; 7] = [
            b"huione-vote",
            self.vote_account.as_bytes(),
            self.voter.as_bytes(),
            self.node.as_bytes(),
            &self.slot.to_le_bytes(),
            &self.hash.0,
            &self.timestamp_ms.to_le_bytes(),
        ];
        let mut at = 0;
        for p in parts {
            m[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        debug_assert_eq!(at, VOTE_MESSAGE_LEN);
        m
    }

    pub fn check_signature(&self, verifier: &dyn SigVerifier) -> bool {
        verifier.verify(&self.voter, &self.message_bytes(), &self.signature)
    }
}

/// Why a received block was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block {slot} names parent slot {parent_slot}, which is not older")]
    ParentNotOlder { slot: Slot, parent_slot: Slot },
    #[error("block {slot} carries {count} votes, at most {MAX_VOTES_PER_BLOCK}")]
    TooManyVotes { slot: Slot, count: usize },
    #[error("block {slot}'s hash does not match its contents")]
    BadHash { slot: Slot },
    #[error("block {slot} is signed by {claimed}, but the schedule's leader is {scheduled}")]
    WrongLeader {
        slot: Slot,
        claimed: Pubkey,
        scheduled: Pubkey,
    },
    #[error("block {slot}'s leader signature does not verify")]
    BadSignature { slot: Slot },
}

/// A block: the leader's choice of parent and the votes it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub slot: Slot,
    pub parent_slot: Slot,
    pub parent_hash: Hash,
    pub leader: Pubkey,
    pub votes: Vec<SignedVote>,
    /// sha256 of everything above.
    pub hash: Hash,
    /// The leader's signature over `hash`.
    #[serde(with = "sig_hex")]
    pub signature: Signature,
}

impl Block {
    /// Builds and signs a block.
    pub fn produce(
        leader: &Keypair,
        slot: Slot,
        parent_slot: Slot,
        parent_hash: Hash,
        votes: Vec<SignedVote>,
    ) -> Self {
        Self::produce_with(
            &Ed25519Verifier,
            leader,
            slot,
            parent_slot,
            parent_hash,
            votes,
        )
    }

    /// [`Block::produce`] through `signer` (see [`SigVerifier::sign`]).
    pub fn produce_with(
        signer: &dyn SigVerifier,
        leader: &Keypair,
        slot: Slot,
        parent_slot: Slot,
        parent_hash: Hash,
        votes: Vec<SignedVote>,
    ) -> Self {
        let mut b = Block {
            slot,
            parent_slot,
            parent_hash,
            leader: leader.pubkey(),
            votes,
            hash: Hash::default(),
            signature: Signature([0; 64]),
        };
        b.hash = b.compute_hash();
        b.signature = signer.sign(leader, &b.hash.0);
        b
    }

    /// sha256 of "huione-block", slot, parent slot, parent hash, leader, vote count, then
    /// each vote's message and signature (streamed: no copy of the body is built).
    pub fn compute_hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update(b"huione-block");
        h.update(self.slot.to_le_bytes());
        h.update(self.parent_slot.to_le_bytes());
        h.update(self.parent_hash.0);
        h.update(self.leader.as_bytes());
        h.update((self.votes.len() as u64).to_le_bytes());
        for v in &self.votes {
            h.update(v.message_bytes());
            h.update(v.signature.0);
        }
        Hash(h.finalize().into())
    }

    /// Checks shape, hash, and that `scheduled_leader` signed it. Votes inside are
    /// checked one by one at replay (a bad vote does not make the block bad).
    pub fn check_integrity(
        &self,
        scheduled_leader: &Pubkey,
        verifier: &dyn SigVerifier,
    ) -> Result<(), BlockError> {
        let slot = self.slot;
        if self.parent_slot >= slot {
            return Err(BlockError::ParentNotOlder {
                slot,
                parent_slot: self.parent_slot,
            });
        }
        if self.votes.len() > MAX_VOTES_PER_BLOCK {
            return Err(BlockError::TooManyVotes {
                slot,
                count: self.votes.len(),
            });
        }
        if self.leader != *scheduled_leader {
            return Err(BlockError::WrongLeader {
                slot,
                claimed: self.leader,
                scheduled: *scheduled_leader,
            });
        }
        if self.compute_hash() != self.hash {
            return Err(BlockError::BadHash { slot });
        }
        if !verifier.verify(&self.leader, &self.hash.0, &self.signature) {
            return Err(BlockError::BadSignature { slot });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampering_is_detected() {
        let leader = Keypair::from_secret(&[1; 32]);
        let voter = Keypair::from_secret(&[2; 32]);
        let vote = SignedVote::sign(
            &voter,
            Pubkey::from_seed_byte(9),
            voter.pubkey(),
            3,
            Hash::default(),
            5,
        );
        assert!(vote.check_signature(&Ed25519Verifier));
        let mut forged = vote.clone();
        forged.slot = 4;
        assert!(!forged.check_signature(&Ed25519Verifier));

        let b = Block::produce(&leader, 5, 3, Hash::default(), vec![vote]);
        let v = Ed25519Verifier;
        assert_eq!(b.check_integrity(&leader.pubkey(), &v), Ok(()));
        let other = voter.pubkey();
        assert!(matches!(
            b.check_integrity(&other, &v),
            Err(BlockError::WrongLeader { .. })
        ));
        let mut t = b.clone();
        t.votes.clear();
        assert_eq!(
            t.check_integrity(&leader.pubkey(), &v),
            Err(BlockError::BadHash { slot: 5 })
        );
        let mut t = b.clone();
        t.signature.0[0] ^= 1;
        assert_eq!(
            t.check_integrity(&leader.pubkey(), &v),
            Err(BlockError::BadSignature { slot: 5 })
        );
        let mut t = b.clone();
        t.parent_slot = 5;
        assert!(matches!(
            t.check_integrity(&leader.pubkey(), &v),
            Err(BlockError::ParentNotOlder { .. })
        ));
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Block>(&json).unwrap(), b);
    }
    /// The wire format of the signed bytes and the block hash, written out in full: a
    /// change here splits a cluster running mixed versions.
    #[test]
    fn vote_message_and_block_hash_layout() {
        let leader = Keypair::from_secret(&[1; 32]);
        let voter = Keypair::from_secret(&[2; 32]);
        let votes: Vec<SignedVote> = (0..3)
            .map(|i| {
                SignedVote::sign(
                    &voter,
                    Pubkey::from_seed_byte(9),
                    Pubkey::from_seed_byte(7),
                    3 + i,
                    Hash([i as u8; 32]),
                    1_700_000_000_000 + i,
                )
            })
            .collect();
        let v = &votes[1];
        let mut m = b"huione-vote".to_vec();
        m.extend_from_slice(v.vote_account.as_bytes());
        m.extend_from_slice(v.voter.as_bytes());
        m.extend_from_slice(v.node.as_bytes());
        m.extend_from_slice(&v.slot.to_le_bytes());
        m.extend_from_slice(&v.hash.0);
        m.extend_from_slice(&v.timestamp_ms.to_le_bytes());
        assert_eq!(v.message(), m);
        assert!(v.signature.verify(&voter.pubkey(), &m));

        let b = Block::produce(&leader, 9, 6, Hash([6; 32]), votes.clone());
        let mut body = Vec::new();
        body.extend_from_slice(&9u64.to_le_bytes());
        body.extend_from_slice(&6u64.to_le_bytes());
        body.extend_from_slice(&[6; 32]);
        body.extend_from_slice(leader.pubkey().as_bytes());
        body.extend_from_slice(&3u64.to_le_bytes());
        for v in &votes {
            body.extend_from_slice(&v.message());
            body.extend_from_slice(&v.signature.0);
        }
        assert_eq!(b.hash, Hash::digest(&[b"huione-block", &body]));
    }
}
