//! A signature cache shared by every simulated node: each distinct (signer, message,
//! signature) is checked with ed25519 once. Real nodes use `Ed25519Verifier`.

use std::collections::HashMap;
use std::sync::Mutex;

use huione_core::{Ed25519Verifier, SigVerifier};
use huione_keys::{Pubkey, Signature};

/// Entries kept before the cache is cleared (bounds memory on long runs).
const MAX_ENTRIES: usize = 200_000;

/// (signer, signature) -> (message, verified?)
type Cache = HashMap<(Pubkey, [u8; 64]), (Vec<u8>, bool)>;

#[derive(Debug, Default)]
pub struct CachedVerifier {
    cache: Mutex<Cache>,
}

impl SigVerifier for CachedVerifier {
    fn verify(&self, signer: &Pubkey, message: &[u8], signature: &Signature) -> bool {
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
