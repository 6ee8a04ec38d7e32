//! Identities: ed25519 keypairs stored in `solana-keygen`'s JSON format, base58 pubkeys,
//! and detached signatures.
//!
//! A keypair file is a JSON array of 64 integers: the 32-byte secret followed by the
//! 32-byte public key. Files written here load in Solana's tools and vice versa.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

/// Largest keypair file we are willing to read; a real one is under 300 bytes.
const MAX_KEYPAIR_FILE_BYTES: u64 = 64 * 1024;

/// Errors from reading, writing or parsing keys. Each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read keypair file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "keypair file {path} is not a keypair: {reason}. Expected a JSON array of 64 numbers \
         (as written by `huione-keygen new` or `solana-keygen new`)"
    )]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "keypair file {path} is inconsistent: its public half does not match its secret half. \
         The file is damaged; restore it from a backup"
    )]
    Inconsistent { path: PathBuf },
    #[error("{path} already exists; refusing to overwrite a keypair (pass --force to replace it)")]
    Exists { path: PathBuf },
    #[error("cannot write keypair file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid pubkey {input:?}: {reason}")]
    BadPubkey { input: String, reason: String },
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// A 32-byte ed25519 public key, shown in base58.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Pubkey(pub [u8; 32]);

impl Pubkey {
    pub const fn new(bytes: [u8; 32]) -> Self {
        Pubkey(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// A deterministic, non-curve pubkey for tests and simulations.
    pub fn from_seed_byte(seed: u8) -> Self {
        Pubkey([seed; 32])
    }
}

impl fmt::Display for Pubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for Pubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pubkey({self})")
    }
}

impl FromStr for Pubkey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::BadPubkey {
            input: s.to_string(),
            reason,
        };
        // 32 bytes are at most 44 base58 characters.
        if s.len() > 44 {
            return Err(bad("too long for a 32-byte key".into()));
        }
        let bytes = bs58::decode(s).into_vec().map_err(|e| bad(e.to_string()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|v: Vec<u8>| bad(format!("decodes to {} bytes, expected 32", v.len())))?;
        Ok(Pubkey(arr))
    }
}

impl serde::Serialize for Pubkey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Pubkey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A detached ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// True when this is a valid signature of `message` by `signer`.
    pub fn verify(&self, signer: &Pubkey, message: &[u8]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&signer.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&self.0);
        key.verify(message, &sig).is_ok()
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

/// An ed25519 keypair.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.pubkey())
    }
}

impl Keypair {
    /// A fresh keypair from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_secret(&secret))
    }

    /// The keypair for a 32-byte secret seed (deterministic; used by tests and simulators).
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Keypair {
            signing: SigningKey::from_bytes(secret),
        }
    }

    /// Parses the 64-byte secret||public form, checking that the halves agree.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let arr: &[u8; 64] = bytes
            .try_into()
            .map_err(|_| format!("{} bytes, expected 64", bytes.len()))?;
        let signing =
            SigningKey::from_keypair_bytes(arr).map_err(|_| "inconsistent".to_string())?;
        Ok(Keypair { signing })
    }

    pub fn to_bytes(&self) -> [u8; 64] {
        self.signing.to_keypair_bytes()
    }

    pub fn pubkey(&self) -> Pubkey {
        Pubkey(self.signing.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }

    /// Parses the JSON text of a keypair file. `path` is only used in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, KeyError> {
        let malformed = |reason: String| KeyError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let numbers: Vec<serde_json::Value> =
            serde_json::from_str(text.trim()).map_err(|e| malformed(e.to_string()))?;
        if numbers.len() != 64 {
            return Err(malformed(format!(
                "the array has {} entries, expected 64",
                numbers.len()
            )));
        }
        let mut bytes = [0u8; 64];
        for (i, n) in numbers.iter().enumerate() {
            bytes[i] = n
                .as_u64()
                .filter(|v| *v <= 255)
                .ok_or_else(|| malformed(format!("entry {i} ({n}) is not a byte (0..=255)")))?
                as u8;
        }
        let secret: [u8; 32] = bytes[..32].try_into().expect("32 bytes");
        let keypair = Self::from_secret(&secret);
        if keypair.pubkey().0[..] != bytes[32..] {
            return Err(KeyError::Inconsistent {
                path: path.to_path_buf(),
            });
        }
        Ok(keypair)
    }

    /// The JSON text of a keypair file: `[n,n,...]` with 64 entries, like solana-keygen.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_bytes().to_vec()).expect("a byte array serializes")
    }

    /// Reads a keypair file.
    pub fn read_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > MAX_KEYPAIR_FILE_BYTES {
            return Err(KeyError::Malformed {
                path: path.to_path_buf(),
                reason: format!("the file is {} bytes, far too large", meta.len()),
            });
        }
        let raw = std::fs::read(path).map_err(read_err)?;
        let text = String::from_utf8(raw).map_err(|_| KeyError::Malformed {
            path: path.to_path_buf(),
            reason: "the file is not UTF-8 text".into(),
        })?;
        Self::from_json(&text, path)
    }

    /// Writes a keypair file with mode 0600. Refuses to replace an existing file unless
    /// `force`; the write goes through a temporary file and a rename, so an interrupted
    /// write never leaves a half-written key behind.
    pub fn write_file(&self, path: impl AsRef<Path>, force: bool) -> Result<(), KeyError> {
        let path = path.as_ref();
        if !force && path.exists() {
            return Err(KeyError::Exists {
                path: path.to_path_buf(),
            });
        }
        let opts = huione_os::fs::WriteOptions {
            mode: Some(0o600),
            overwrite: force,
        };
        huione_os::fs::write_atomic_with(path, self.to_json().as_bytes(), opts).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                KeyError::Write {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A keypair file as written by solana-keygen (secret = bytes 1..=32).
    fn solana_style_file() -> (String, Keypair) {
        let secret: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
        let kp = Keypair::from_secret(&secret);
        let mut all = secret.to_vec();
        all.extend_from_slice(&kp.pubkey().0);
        let text = format!(
            "[{}]",
            all.iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        (text, kp)
    }

    #[test]
    fn loads_solana_keygen_format_and_writes_it_back_identically() {
        let (text, kp) = solana_style_file();
        let loaded = Keypair::from_json(&text, Path::new("k.json")).unwrap();
        assert_eq!(loaded.pubkey(), kp.pubkey());
        assert_eq!(loaded.to_json(), text);
    }

    #[test]
    fn known_vector_pubkey_in_base58() {
        // RFC 8032 test 1: secret 9d61b1..., public d75a98...
        let secret = hex32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let kp = Keypair::from_secret(&secret);
        let expected_pub =
            hex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        assert_eq!(kp.pubkey().0, expected_pub);
        let b58 = kp.pubkey().to_string();
        assert_eq!(b58.parse::<Pubkey>().unwrap(), kp.pubkey());
        assert_eq!(
            bs58::decode(&b58).into_vec().unwrap(),
            expected_pub.to_vec()
        );
    }

    fn hex32(s: &str) -> [u8; 32] {
        std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
    }

    #[test]
    fn rejects_malformed_files_with_the_path_in_the_message() {
        let p = Path::new("/keys/bad.json");
        for (text, needle) in [
            ("", "bad.json"),
            ("{}", "bad.json"),
            ("[1,2,3]", "3 entries"),
            ("[1,2,3", "bad.json"),
            ("not json", "bad.json"),
        ] {
            let err = Keypair::from_json(text, p).unwrap_err();
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }
        let mut big = vec!["7"; 64];
        big[5] = "300";
        let err = Keypair::from_json(&format!("[{}]", big.join(",")), p).unwrap_err();
        assert!(err.to_string().contains("entry 5"), "{err}");
    }

    #[test]
    fn rejects_a_file_whose_public_half_does_not_match() {
        let (text, kp) = solana_style_file();
        let mut bytes: Vec<u8> = serde_json::from_str(&text).unwrap();
        bytes[40] ^= 1;
        let err = Keypair::from_json(&serde_json::to_string(&bytes).unwrap(), Path::new("x"))
            .unwrap_err();
        assert!(matches!(err, KeyError::Inconsistent { .. }), "{err}");
        let _ = kp;
    }

    #[test]
    fn write_refuses_overwrite_without_force_and_uses_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.json");
        let a = Keypair::generate().unwrap();
        a.write_file(&path, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = Keypair::generate().unwrap();
        assert!(matches!(
            b.write_file(&path, false),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(Keypair::read_file(&path).unwrap().pubkey(), a.pubkey());
        b.write_file(&path, true).unwrap();
        assert_eq!(Keypair::read_file(&path).unwrap().pubkey(), b.pubkey());
    }

    #[test]
    fn truncated_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.json");
        let kp = Keypair::generate().unwrap();
        let text = kp.to_json();
        for cut in [0, 1, 10, text.len() / 2, text.len() - 1] {
            std::fs::write(&path, &text[..cut]).unwrap();
            let err = Keypair::read_file(&path).unwrap_err();
            assert!(err.to_string().contains("id.json"), "{err}");
        }
        assert!(matches!(
            Keypair::read_file(dir.path().join("missing.json")),
            Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn signatures_verify_only_for_the_right_key_and_message() {
        let a = Keypair::generate().unwrap();
        let b = Keypair::generate().unwrap();
        let sig = a.sign(b"hello");
        assert!(sig.verify(&a.pubkey(), b"hello"));
        assert!(!sig.verify(&a.pubkey(), b"hellp"));
        assert!(!sig.verify(&b.pubkey(), b"hello"));
    }

    #[test]
    fn pubkey_parse_errors() {
        assert!("".parse::<Pubkey>().is_err());
        assert!("0OIl".parse::<Pubkey>().is_err());
        assert!("1111".parse::<Pubkey>().is_err());
        assert!("1".repeat(100).parse::<Pubkey>().is_err());
    }
}
