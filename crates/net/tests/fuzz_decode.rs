//! Seeded fuzzing of the decoder: random bytes and random mutations of valid datagrams
//! must give a typed error or a message that re-encodes to the same bytes — never a
//! panic. A failure prints the seed and case.

mod common;

use huione_core::SplitMix64;
use huione_net::{decode, encode, MAX_DATAGRAM_BYTES};

const SEED: u64 = 0x5eed_0ff0_2200;

fn check(bytes: &[u8], case: usize) {
    if let Ok(msg) = decode(bytes) {
        // The encoding is canonical: anything accepted re-encodes identically.
        let again = encode(&msg).unwrap_or_else(|e| panic!("seed={SEED:#x} case={case}: {e}"));
        assert_eq!(again, bytes, "seed={SEED:#x} case={case}: not canonical");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = SplitMix64(SEED);
    let mut buf = Vec::new();
    for case in 0..100_000 {
        let len = match rng.next() % 64 {
            0 => (rng.next() % 65_600) as usize,
            _ => (rng.next() % 512) as usize,
        };
        fill(&mut rng, &mut buf, len);
        // Half the cases get a valid header so the body parsers are exercised too.
        if rng.next() & 1 == 0 && buf.len() >= 6 {
            buf[..5].copy_from_slice(b"HUIO\x01");
            buf[5] = (rng.next() % 9) as u8;
        }
        check(&buf, case);
    }
}

#[test]
fn mutated_valid_datagrams_never_panic() {
    let corpus: Vec<Vec<u8>> = common::every_message()
        .iter()
        .map(|m| encode(m).unwrap())
        .collect();
    // A full 256-vote block, mutated less often: it is 50 times larger than the rest.
    let big = encode(&huione_net::Message::Block(common::block(9, 256))).unwrap();
    let mut rng = SplitMix64(SEED ^ 1);
    let mut accepted = 0;
    for case in 0..120_000 {
        let mut b = match rng.next() % 64 {
            0 => big.clone(),
            _ => corpus[(rng.next() % corpus.len() as u64) as usize].clone(),
        };
        for _ in 0..1 + rng.next() % 4 {
            mutate(&mut rng, &mut b);
        }
        check(&b, case);
        accepted += decode(&b).is_ok() as u32;
    }
    // Most single-byte flips inside fixed-width fields still decode: the fuzzer does
    // reach the end of messages, not only their headers.
    assert!(
        accepted > 1_000,
        "only {accepted} mutated datagrams decoded"
    );
}

/// `len` random bytes, eight per RNG call (the tests run unoptimised).
fn fill(rng: &mut SplitMix64, buf: &mut Vec<u8>, len: usize) {
    buf.clear();
    while buf.len() < len {
        buf.extend_from_slice(&rng.next().to_le_bytes());
    }
    buf.truncate(len);
}

static ZEROS: [u8; MAX_DATAGRAM_BYTES + 16] = [0; MAX_DATAGRAM_BYTES + 16];

fn mutate(rng: &mut SplitMix64, b: &mut Vec<u8>) {
    if b.is_empty() {
        b.push(rng.next() as u8);
        return;
    }
    let at = (rng.next() % b.len() as u64) as usize;
    match rng.next() % 8 {
        0 => b[at] ^= 1 << (rng.next() % 8),
        1 => b[at] = rng.next() as u8,
        2 => b.truncate(at),
        3 => b.insert(at, rng.next() as u8),
        4 => {
            b.remove(at);
        }
        5 => {
            // A large length/count where one might be.
            let v = [0xff, 0xff];
            let end = (at + 2).min(b.len());
            b[at..end].copy_from_slice(&v[..end - at]);
        }
        6 => {
            let extra = (rng.next() % 64) as usize;
            for _ in 0..extra / 8 + 1 {
                b.extend_from_slice(&rng.next().to_le_bytes());
            }
        }
        _ => {
            // Grow towards and past the size limit.
            let target = MAX_DATAGRAM_BYTES - 8 + (rng.next() % 16) as usize;
            if b.len() < target {
                let missing = target - b.len();
                b.extend_from_slice(&ZEROS[..missing]);
            }
        }
    }
}
