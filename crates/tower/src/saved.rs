//! The signed saved form of a tower, as tower storage keeps it.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic "HUITOWER" (8) | version u16 | node pubkey (32) | signature (64) | len u32 | data
//! data = node pubkey (32) | root flag u8 [+ u64] | vote count u8 | (slot u64, count u32)*
//!        | last vote hash (32) | timestamp flag u8 [+ u64]
//!        | leader claim flag u8 [+ u64]                       (version 2 only)
//! ```
//!
//! Version 2 adds the leader claim (see [`Tower::leader_claim`]). Version 1 towers are
//! still read (their claim is `None`, and a taker then falls back to a clock-based floor);
//! this build writes version 2.
//!
//! The signature is the identity's ed25519 signature over `version || data`. Loading
//! checks every part and returns a typed error; a bad tower is never silently replaced.
//!
//! [`SavedTower::new`] and [`SavedTower::verify`] always use ed25519. The `_with`
//! variants take the signing or checking function instead, for one caller only: the
//! simulator, whose nodes sign with a cheap keyed hash that its own check verifies
//! exactly (another key, another tower or a flipped bit still fails).

use huione_keys::{Keypair, Pubkey, Signature};

use crate::lockout::{Lockout, Tower, MAX_LOCKOUT_HISTORY};

/// The saved-tower format this build writes.
pub const SAVED_TOWER_VERSION: u16 = 2;
/// The oldest saved-tower format this build still reads.
pub const OLDEST_READ_VERSION: u16 = 1;
const MAGIC: &[u8; 8] = b"HUITOWER";
const HEADER_LEN: usize = 8 + 2 + 32 + 64 + 4;
/// A tower is at most ~600 bytes; anything far larger is not a tower.
const MAX_DATA_LEN: usize = 4096;

/// Why a stored tower cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TowerError {
    #[error("the stored tower is malformed ({0}); it was damaged or is not a huione tower")]
    Malformed(String),
    #[error(
        "the stored tower has format version {found}, this build reads versions \
         {OLDEST_READ_VERSION} to {SAVED_TOWER_VERSION}; run a huione-validator release that \
         knows version {found}"
    )]
    UnknownVersion { found: u16 },
    #[error(
        "the stored tower's signature does not verify: it was tampered with or corrupted. \
         Do not vote from it; inspect it with `huione-tower show`"
    )]
    BadSignature,
    #[error(
        "the stored tower belongs to identity {found}, not {expected}; check --identity and \
         the tower storage location"
    )]
    WrongIdentity { expected: Pubkey, found: Pubkey },
}

/// A tower signed by its identity, in the byte form that storage keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedTower {
    version: u16,
    node_pubkey: Pubkey,
    signature: Signature,
    data: Vec<u8>,
}

impl SavedTower {
    /// Signs `tower` with `keypair` (ed25519), which must be the tower's identity.
    pub fn new(tower: &Tower, keypair: &Keypair) -> Result<Self, TowerError> {
        Self::new_with(tower, keypair, |key, message| key.sign(message))
    }

    /// [`SavedTower::new`], with `sign(keypair, message)` making the signature.
    pub fn new_with(
        tower: &Tower,
        keypair: &Keypair,
        sign: impl FnOnce(&Keypair, &[u8]) -> Signature,
    ) -> Result<Self, TowerError> {
        if tower.node_pubkey != keypair.pubkey() {
            return Err(TowerError::WrongIdentity {
                expected: keypair.pubkey(),
                found: tower.node_pubkey,
            });
        }
        let data = encode_tower(tower, SAVED_TOWER_VERSION);
        let signature = sign(keypair, &signed_message(SAVED_TOWER_VERSION, &data));
        Ok(SavedTower {
            version: SAVED_TOWER_VERSION,
            node_pubkey: tower.node_pubkey,
            signature,
            data,
        })
    }

    pub fn node_pubkey(&self) -> Pubkey {
        self.node_pubkey
    }
    pub fn version(&self) -> u16 {
        self.version
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(self.node_pubkey.as_bytes());
        out.extend_from_slice(&self.signature.0);
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    /// Parses the envelope. Does not verify; call [`SavedTower::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TowerError> {
        let mut r = Reader::new(bytes);
        if r.take(8)? != MAGIC {
            return Err(TowerError::Malformed("bad magic".into()));
        }
        let version = r.u16()?;
        if !(OLDEST_READ_VERSION..=SAVED_TOWER_VERSION).contains(&version) {
            return Err(TowerError::UnknownVersion { found: version });
        }
        let node_pubkey = Pubkey(r.array()?);
        let signature = Signature(r.array()?);
        let len = r.u32()? as usize;
        if len > MAX_DATA_LEN {
            return Err(TowerError::Malformed(format!(
                "data length {len} is too large"
            )));
        }
        let data = r.take(len)?.to_vec();
        r.finish()?;
        Ok(SavedTower {
            version,
            node_pubkey,
            signature,
            data,
        })
    }

    /// Verifies the ed25519 signature and that the tower is `expected`'s, and decodes it.
    pub fn verify(&self, expected: &Pubkey) -> Result<Tower, TowerError> {
        self.verify_with(expected, |signer, message, signature| {
            signature.verify(signer, message)
        })
    }

    /// [`SavedTower::verify`], with `check(signer, message, signature)` checking the
    /// signature. Every other check is the same.
    pub fn verify_with(
        &self,
        expected: &Pubkey,
        check: impl FnOnce(&Pubkey, &[u8], &Signature) -> bool,
    ) -> Result<Tower, TowerError> {
        let message = signed_message(self.version, &self.data);
        if !check(&self.node_pubkey, &message, &self.signature) {
            return Err(TowerError::BadSignature);
        }
        if self.node_pubkey != *expected {
            return Err(TowerError::WrongIdentity {
                expected: *expected,
                found: self.node_pubkey,
            });
        }
        let tower = decode_tower(&self.data, self.version)?;
        if tower.node_pubkey != self.node_pubkey {
            return Err(TowerError::WrongIdentity {
                expected: *expected,
                found: tower.node_pubkey,
            });
        }
        Ok(tower)
    }

    /// Parses and verifies in one step.
    pub fn decode_verified(bytes: &[u8], expected: &Pubkey) -> Result<Tower, TowerError> {
        Self::from_bytes(bytes)?.verify(expected)
    }
}

fn signed_message(version: u16, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(2 + data.len());
    m.extend_from_slice(&version.to_le_bytes());
    m.extend_from_slice(data);
    m
}

fn encode_tower(t: &Tower, version: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + 12 * t.votes().len());
    out.extend_from_slice(t.node_pubkey.as_bytes());
    put_opt_u64(&mut out, t.root());
    out.push(t.votes().len() as u8);
    for v in t.votes() {
        out.extend_from_slice(&v.slot.to_le_bytes());
        out.extend_from_slice(&v.confirmation_count.to_le_bytes());
    }
    out.extend_from_slice(&t.last_vote_hash());
    put_opt_u64(&mut out, t.last_vote_timestamp_ms());
    if version >= 2 {
        put_opt_u64(&mut out, t.leader_claim());
    }
    out
}

fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => out.push(0),
    }
}

fn decode_tower(data: &[u8], version: u16) -> Result<Tower, TowerError> {
    let mut r = Reader::new(data);
    let node_pubkey = Pubkey(r.array()?);
    let root = r.opt_u64()?;
    let count = r.u8()? as usize;
    if count > MAX_LOCKOUT_HISTORY {
        return Err(TowerError::Malformed(format!("{count} votes")));
    }
    let mut votes = Vec::with_capacity(count);
    for _ in 0..count {
        let slot = r.u64()?;
        let confirmation_count = r.u32()?;
        votes.push(Lockout {
            slot,
            confirmation_count,
        });
    }
    let hash = r.array()?;
    let ts = r.opt_u64()?;
    let claim = if version >= 2 { r.opt_u64()? } else { None };
    r.finish()?;
    Tower::from_parts(node_pubkey, votes, root, hash, ts)
        .map(|t| t.with_leader_claim(claim))
        .map_err(TowerError::Malformed)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TowerError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| TowerError::Malformed("truncated".into()))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], TowerError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn u8(&mut self) -> Result<u8, TowerError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TowerError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, TowerError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, TowerError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, TowerError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            f => Err(TowerError::Malformed(format!("bad option flag {f}"))),
        }
    }
    fn finish(&self) -> Result<(), TowerError> {
        if self.pos != self.bytes.len() {
            return Err(TowerError::Malformed(format!(
                "{} trailing bytes",
                self.bytes.len() - self.pos
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kp: &Keypair) -> Tower {
        let mut t = Tower::new(kp.pubkey());
        for s in [3, 4, 7, 9, 40] {
            t.record_vote(s, [s as u8; 32], 1_700_000_000_000 + s);
        }
        t.raise_leader_claim(42);
        t
    }

    #[test]
    fn leader_claim_round_trips_and_only_rises() {
        let kp = Keypair::from_secret(&[7; 32]);
        let mut t = sample(&kp);
        t.raise_leader_claim(10);
        assert_eq!(t.leader_claim(), Some(42), "a claim never goes down");
        let bytes = SavedTower::new(&t, &kp).unwrap().to_bytes();
        let back = SavedTower::decode_verified(&bytes, &kp.pubkey()).unwrap();
        assert_eq!(back.leader_claim(), Some(42));
    }

    #[test]
    fn version_1_towers_are_still_read_without_a_claim() {
        let kp = Keypair::from_secret(&[7; 32]);
        let t = sample(&kp);
        let data = encode_tower(&t, 1);
        let v1 = SavedTower {
            version: 1,
            node_pubkey: kp.pubkey(),
            signature: kp.sign(&signed_message(1, &data)),
            data,
        };
        let back = SavedTower::decode_verified(&v1.to_bytes(), &kp.pubkey()).unwrap();
        assert_eq!(back.leader_claim(), None);
        assert_eq!(back, t.clone().with_leader_claim(None));
    }

    #[test]
    fn round_trip() {
        let kp = Keypair::from_secret(&[7; 32]);
        let t = sample(&kp);
        let bytes = SavedTower::new(&t, &kp).unwrap().to_bytes();
        assert_eq!(
            SavedTower::decode_verified(&bytes, &kp.pubkey()).unwrap(),
            t
        );
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let kp = Keypair::from_secret(&[7; 32]);
        let bytes = SavedTower::new(&sample(&kp), &kp).unwrap().to_bytes();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                assert!(
                    SavedTower::decode_verified(&b, &kp.pubkey()).is_err(),
                    "flip of byte {i} bit {bit:#x} accepted"
                );
            }
        }
    }

    #[test]
    fn truncation_is_malformed() {
        let kp = Keypair::from_secret(&[7; 32]);
        let bytes = SavedTower::new(&sample(&kp), &kp).unwrap().to_bytes();
        for cut in 0..bytes.len() {
            assert!(SavedTower::decode_verified(&bytes[..cut], &kp.pubkey()).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            SavedTower::from_bytes(&longer),
            Err(TowerError::Malformed(_))
        ));
    }

    #[test]
    fn typed_errors() {
        let a = Keypair::from_secret(&[1; 32]);
        let b = Keypair::from_secret(&[2; 32]);
        let saved = SavedTower::new(&sample(&a), &a).unwrap();
        assert!(matches!(
            saved.verify(&b.pubkey()),
            Err(TowerError::WrongIdentity { .. })
        ));
        // b cannot sign a's tower
        assert!(SavedTower::new(&sample(&a), &b).is_err());
        let mut bytes = saved.to_bytes();
        bytes[8] = 9;
        assert_eq!(
            SavedTower::from_bytes(&bytes),
            Err(TowerError::UnknownVersion { found: 9 })
        );
        let mut bytes = saved.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            SavedTower::decode_verified(&bytes, &a.pubkey()),
            Err(TowerError::BadSignature)
        );
        // a tower re-signed by another key under a's name: signature check fails
        let mut forged = saved.clone();
        forged.signature = b.sign(&signed_message(forged.version, &forged.data));
        assert_eq!(forged.verify(&a.pubkey()), Err(TowerError::BadSignature));
    }
    #[test]
    fn another_signature_scheme_is_checked_by_its_own_check_only() {
        let kp = Keypair::from_secret(&[7; 32]);
        // A toy scheme: the message's length and first bytes, tagged by the key.
        let toy = |key: &Pubkey, m: &[u8]| {
            let mut s = [0u8; 64];
            s[..32].copy_from_slice(key.as_bytes());
            s[32..40].copy_from_slice(&(m.len() as u64).to_le_bytes());
            s[40..].copy_from_slice(&m[m.len() - 24..]);
            Signature(s)
        };
        let check = |k: &Pubkey, m: &[u8], s: &Signature| toy(k, m) == *s;
        let t = sample(&kp);
        let saved = SavedTower::new_with(&t, &kp, |k, m| toy(&k.pubkey(), m)).unwrap();
        assert_eq!(saved.verify_with(&kp.pubkey(), check).unwrap(), t);
        // The ed25519 check refuses it: the default path never accepts another scheme.
        assert_eq!(saved.verify(&kp.pubkey()), Err(TowerError::BadSignature));
        let mut bytes = saved.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = SavedTower::from_bytes(&bytes).unwrap();
        assert_eq!(
            tampered.verify_with(&kp.pubkey(), check),
            Err(TowerError::BadSignature)
        );
        // Still only the tower's own identity can sign it.
        let other = Keypair::from_secret(&[8; 32]);
        assert!(SavedTower::new_with(&t, &other, |k, m| toy(&k.pubkey(), m)).is_err());
    }
}
