//! Signed contact info: how to reach a node, which cluster it belongs to, and which
//! running instance of its identity it is.

use std::net::SocketAddr;

use huione_core::Hash;
use huione_keys::{Keypair, Pubkey, Signature};

use crate::codec::{Reader, Writer};
use crate::wire::{DecodeError, EncodeError};

/// Longest version string carried in a [`ContactInfo`].
pub const MAX_VERSION_LEN: usize = 32;
/// Longest instance id (the same cap the core applies to instance announcements).
pub const MAX_INSTANCE_ID_LEN: usize = 128;
/// Smallest encoded [`ContactInfo`] (both optional addresses absent, empty strings).
pub(crate) const MIN_CONTACT_INFO_BYTES: usize = 32 + 7 + 1 + 1 + 1 + 32 + 1 + 8 + 8 + 64;
/// Largest encoded [`ContactInfo`] (IPv6 everywhere, longest strings).
pub const MAX_CONTACT_INFO_BYTES: usize =
    32 + 3 * 19 + 1 + MAX_VERSION_LEN + 32 + 1 + MAX_INSTANCE_ID_LEN + 8 + 8 + 64;

/// Domain separation for contact-info signatures, so no other signed message of ours
/// can be replayed as one.
const SIGNING_DOMAIN: &[u8] = b"huione-contact-info-v1";

/// One running process of an identity: a random id chosen at start, and when it took
/// the identity (process start, or the `set-identity` that made it this identity).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InstanceId {
    pub id: String,
    pub started_ms: u64,
}

impl InstanceId {
    /// True when `self` started before `other` (ties broken by id), i.e. `self` is the
    /// older instance, the one that should exit when both run one identity.
    pub fn is_older_than(&self, other: &InstanceId) -> bool {
        (self.started_ms, &self.id) < (other.started_ms, &other.id)
    }
}

/// A node's self-description, signed by its identity. The newest (by `wallclock_ms`)
/// record per identity wins in gossip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactInfo {
    pub identity: Pubkey,
    /// Where this node receives gossip, votes, blocks and repair (one UDP port).
    pub gossip_addr: SocketAddr,
    /// JSON-RPC over HTTP, if the node serves it.
    pub rpc_addr: Option<SocketAddr>,
    /// A separate address for votes/transactions, if the node has one.
    pub tpu_vote_addr: Option<SocketAddr>,
    /// Software version, e.g. "huione 0.1.0".
    pub version: String,
    /// The cluster: records with another genesis hash are ignored.
    pub genesis_hash: Hash,
    pub instance: InstanceId,
    /// When this record was signed (sender's clock).
    pub wallclock_ms: u64,
    pub signature: Signature,
}

/// Why a record's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("contact info for {identity} is not signed by that identity")]
    BadSignature { identity: Pubkey },
    #[error("contact info for {identity} cannot be encoded: {source}")]
    Unencodable {
        identity: Pubkey,
        source: EncodeError,
    },
}

impl ContactInfo {
    /// Sets `identity` to the keypair's pubkey and signs. Fails when a field exceeds its
    /// wire limit (the record could not be sent anyway).
    pub fn sign(mut self, keypair: &Keypair) -> Result<Self, EncodeError> {
        self.identity = keypair.pubkey();
        let message = self.signing_message()?;
        self.signature = keypair.sign(&message);
        Ok(self)
    }

    /// Checks that `identity` signed this record.
    pub fn verify(&self) -> Result<(), VerifyError> {
        let message = self
            .signing_message()
            .map_err(|source| VerifyError::Unencodable {
                identity: self.identity,
                source,
            })?;
        if self.signature.verify(&self.identity, &message) {
            Ok(())
        } else {
            Err(VerifyError::BadSignature {
                identity: self.identity,
            })
        }
    }

    /// A short fingerprint of this exact record, for pull-request digests. The first
    /// eight bytes of the signature: different contents give different signatures.
    pub fn digest(&self) -> u64 {
        u64::from_le_bytes(self.signature.0[..8].try_into().expect("8 bytes"))
    }

    fn signing_message(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::with_capacity(SIGNING_DOMAIN.len() + MAX_CONTACT_INFO_BYTES);
        w.bytes(SIGNING_DOMAIN);
        self.encode_body(&mut w)?;
        Ok(w.buf)
    }

    fn check_limits(&self) -> Result<(), EncodeError> {
        if self.version.len() > MAX_VERSION_LEN {
            return Err(EncodeError::TooLong {
                what: "version",
                len: self.version.len(),
                max: MAX_VERSION_LEN,
            });
        }
        if self.instance.id.len() > MAX_INSTANCE_ID_LEN {
            return Err(EncodeError::TooLong {
                what: "instance id",
                len: self.instance.id.len(),
                max: MAX_INSTANCE_ID_LEN,
            });
        }
        Ok(())
    }

    fn encode_body(&self, w: &mut Writer) -> Result<(), EncodeError> {
        self.check_limits()?;
        w.bytes(self.identity.as_bytes());
        w.addr(&self.gossip_addr);
        w.opt_addr(&self.rpc_addr);
        w.opt_addr(&self.tpu_vote_addr);
        w.short_str(&self.version);
        w.bytes(&self.genesis_hash.0);
        w.short_str(&self.instance.id);
        w.u64(self.instance.started_ms);
        w.u64(self.wallclock_ms);
        Ok(())
    }

    pub(crate) fn encode(&self, w: &mut Writer) -> Result<(), EncodeError> {
        self.encode_body(w)?;
        w.bytes(&self.signature.0);
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ContactInfo {
            identity: Pubkey(r.array()?),
            gossip_addr: r.addr("gossip address")?,
            rpc_addr: r.opt_addr("rpc address")?,
            tpu_vote_addr: r.opt_addr("tpu/vote address")?,
            version: r.short_str("version", MAX_VERSION_LEN)?,
            genesis_hash: Hash(r.array()?),
            instance: InstanceId {
                id: r.short_str("instance id", MAX_INSTANCE_ID_LEN)?,
                started_ms: r.u64()?,
            },
            wallclock_ms: r.u64()?,
            signature: Signature(r.array()?),
        })
    }
}
