//! The signature scheme shared by every simulated node.
//!
//! Votes, blocks and towers made in the simulator carry a *sim signature*: sha256 keyed
//! with the signer's ed25519 secret, over the message, followed by 32 bytes of 0xff (an
//! ed25519 signature never ends that way: its second half is a canonical scalar below
//! 2^253, so neither scheme can pass for the other). Checking recomputes the keyed hash
//! from the secret of the claimed signer, so a signature by another key, over another
//! message, or for a signer that never signed anything still fails — the checks stay
//! exact, at a fraction of ed25519's cost. Every sim signature made is also remembered
//! with its signer and message: a check of exactly that (signer, message, signature) is
//! true without hashing again (it is what the recomputation would answer); anything else
//! is recomputed. Any other signature (announcements, forgeries made with real keys) is
//! checked with ed25519, once per distinct (signer, message, signature). Real nodes use
//! `Ed25519Verifier` for both signing and checking.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use huione_core::{Ed25519Verifier, Hash, SigVerifier};
use huione_keys::{Keypair, Pubkey, Signature};

/// Entries kept in each cache before it is cleared (bounds memory on long runs).
const MAX_ENTRIES: usize = 200_000;
/// Sim signatures remembered before they are forgotten (a check of a forgotten one is
/// recomputed). About 20 are made per slot, checked within a few slots.
const MAX_MADE: usize = 20_000;

/// The second half of every sim signature.
const SIM_MARK: [u8; 32] = [0xff; 32];

/// (signer, signature) -> (message, verified?)
type Cache = HashMap<(Pubkey, [u8; 64]), (Vec<u8>, bool)>;

/// First half of a sim signature -> (signer, message) it was made for.
type Made = HashMap<[u8; 32], (Pubkey, Vec<u8>), BuildHasherDefault<PrefixHasher>>;

/// Hashes a sim signature by its first 8 bytes: they are sha256 output already.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        if let Some(b) = bytes.get(..8) {
            self.0 ^= u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
    }
    fn write_usize(&mut self, _: usize) {
        // The array's length prefix carries no information.
    }
}

#[derive(Debug, Default)]
pub struct CachedVerifier {
    cache: Mutex<Cache>,
    /// The secret of every key that has made a sim signature.
    secrets: Mutex<HashMap<Pubkey, [u8; 32]>>,
    /// Sim signatures made, with what they sign.
    made: Mutex<Made>,
}

fn sim_signature(secret: &[u8; 32], message: &[u8]) -> Signature {
    let h = Hash::digest(&[b"huione-sim-signature", secret, message]);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&h.0);
    sig[32..].copy_from_slice(&SIM_MARK);
    Signature(sig)
}

fn first_half(signature: &Signature) -> [u8; 32] {
    signature.0[..32].try_into().expect("32 bytes")
}

impl SigVerifier for CachedVerifier {
    fn sign(&self, key: &Keypair, message: &[u8]) -> Signature {
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&key.to_bytes()[..32]);
        let pubkey = key.pubkey();
        self.secrets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pubkey, secret);
        let signature = sim_signature(&secret, message);
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if made.len() >= MAX_MADE {
            made.clear();
        }
        made.insert(first_half(&signature), (pubkey, message.to_vec()));
        signature
    }

    fn verify(&self, signer: &Pubkey, message: &[u8], signature: &Signature) -> bool {
        if signature.0[32..] == SIM_MARK {
            let made = self.made.lock().unwrap_or_else(|p| p.into_inner());
            if made
                .get(&first_half(signature))
                .is_some_and(|(k, m)| k == signer && m.as_slice() == message)
            {
                return true;
            }
            drop(made);
            let secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
            return secrets
                .get(signer)
                .is_some_and(|secret| sim_signature(secret, message) == *signature);
        }
        let key = (*signer, signature.0);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((msg, ok)) = cache.get(&key) {
            if msg.as_slice() == message {
                return *ok;
            }
        }
        let ok = Ed25519Verifier.verify(signer, message, signature);
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key, (message.to_vec(), ok));
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_signatures_verify_only_for_the_signer_and_message() {
        let v = CachedVerifier::default();
        let a = Keypair::from_secret(&[1; 32]);
        let b = Keypair::from_secret(&[2; 32]);
        let sig = v.sign(&a, b"vote");
        assert_eq!(sig.0[32..], SIM_MARK);
        assert!(v.verify(&a.pubkey(), b"vote", &sig));
        assert!(!v.verify(&a.pubkey(), b"votf", &sig));
        // b has never signed: nothing can verify for it yet.
        assert!(!v.verify(&b.pubkey(), b"vote", &sig));
        // b's own signature does not pass as a's.
        let by_b = v.sign(&b, b"vote");
        assert!(v.verify(&b.pubkey(), b"vote", &by_b));
        assert!(!v.verify(&a.pubkey(), b"vote", &by_b));
        let mut tampered = sig;
        tampered.0[0] ^= 1;
        assert!(!v.verify(&a.pubkey(), b"vote", &tampered));
        // ed25519 signatures still go through ed25519.
        let real = a.sign(b"vote");
        assert!(v.verify(&a.pubkey(), b"vote", &real));
        assert!(!v.verify(&b.pubkey(), b"vote", &real));
    }
}
