//! 32-byte hashes and the hex/serde helpers shared by the wire types.

use std::fmt;

use huione_keys::Signature;
use sha2::{Digest, Sha256};

/// A sha256 digest: block hashes and the genesis hash. Shown and serialized as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// sha256 over the concatenation of `parts`.
    pub fn digest(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits are enough to tell blocks apart in logs.
        write!(f, "Hash({})", &to_hex(&self.0)[..8])
    }
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        from_hex(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(Hash(out))
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub(crate) fn from_hex(s: &str, out: &mut [u8]) -> Result<(), String> {
    if s.len() != out.len() * 2 {
        return Err(format!(
            "expected {} hex digits, got {}",
            out.len() * 2,
            s.len()
        ));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", c as char)),
    };
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(())
}

/// serde for [`Signature`] as hex (the keys crate does not derive serde for it).
pub(crate) mod sig_hex {
    use super::*;

    pub fn serialize<S: serde::Serializer>(sig: &Signature, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(&sig.0))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        let mut out = [0u8; 64];
        from_hex(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(Signature(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let h = Hash::digest(&[b"a", b"bc"]);
        assert_eq!(h, Hash::digest(&[b"abc"]));
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json.len(), 66);
        assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), h);
        assert!(serde_json::from_str::<Hash>("\"zz\"").is_err());
        let mut bad = json.clone();
        bad.replace_range(1..2, "g");
        assert!(serde_json::from_str::<Hash>(&bad).is_err());
    }
}
