//! Round trips and rejections of the wire codec.

mod common;

use common::*;
use huione_core::{InstanceAnnouncement, MAX_VOTES_PER_BLOCK};
use huione_net::*;

#[test]
fn every_message_round_trips() {
    for msg in every_message() {
        let bytes = encode(&msg).unwrap();
        assert!(bytes.len() <= MAX_DATAGRAM_BYTES);
        assert_eq!(&bytes[..4], b"HUIO");
        assert_eq!(bytes[4], WIRE_VERSION);
        assert_eq!(decode(&bytes).unwrap(), msg, "{}", msg.kind_name());
    }
}

#[test]
fn a_block_with_the_most_votes_fits_one_datagram() {
    let b = block(300, MAX_VOTES_PER_BLOCK);
    let bytes = encode(&Message::Block(b.clone())).unwrap();
    assert_eq!(bytes.len(), HEADER_BYTES + MAX_BLOCK_BYTES);
    assert_eq!(bytes.len(), 53_432);
    assert!(bytes.len() < 64 * 1024);
    assert_eq!(decode(&bytes).unwrap(), Message::Block(b));
}

#[test]
fn a_block_with_too_many_votes_is_refused_both_ways() {
    let b = block(300, MAX_VOTES_PER_BLOCK + 1);
    assert!(matches!(
        encode(&Message::Block(b.clone())),
        Err(EncodeError::TooMany { count: 257, .. })
    ));
    // Forge the datagram by hand: count 257 is refused before any vote is parsed.
    let mut ok = encode(&Message::Block(block(300, 1))).unwrap();
    let count_at = HEADER_BYTES + 8 + 8 + 32 + 32;
    ok[count_at..count_at + 2].copy_from_slice(&257u16.to_le_bytes());
    assert!(matches!(
        decode(&ok),
        Err(DecodeError::TooMany { count: 257, .. })
    ));
}

#[test]
fn oversize_datagrams_are_rejected_before_parsing() {
    let mut bytes = encode(&Message::Vote(vote(1, 1))).unwrap();
    bytes.resize(MAX_DATAGRAM_BYTES + 1, 0);
    let err = decode(&bytes).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Oversize {
            len: MAX_DATAGRAM_BYTES + 1
        }
    );
    assert_eq!(err.reason(), DropReason::Oversize);
    assert_eq!(
        decode(&vec![0u8; 65_507]).unwrap_err().reason(),
        DropReason::Oversize
    );
}

#[test]
fn header_errors_are_typed() {
    let good = encode(&Message::Vote(vote(1, 1))).unwrap();
    assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode(&good[..5]), Err(DecodeError::Truncated));
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(decode(&bad), Err(DecodeError::BadMagic));
    let mut bad = good.clone();
    bad[4] = 2;
    assert_eq!(decode(&bad), Err(DecodeError::UnsupportedVersion(2)));
    assert_eq!(
        decode(&bad).unwrap_err().reason(),
        DropReason::UnsupportedVersion
    );
    let mut bad = good.clone();
    bad[5] = 99;
    assert_eq!(decode(&bad), Err(DecodeError::UnknownKind(99)));
    let mut bad = good.clone();
    bad.push(0);
    assert_eq!(decode(&bad), Err(DecodeError::TrailingBytes(1)));
    assert_eq!(decode(&good[..good.len() - 1]), Err(DecodeError::Truncated));
}

#[test]
fn every_truncation_of_every_message_is_an_error() {
    for msg in every_message() {
        let bytes = encode(&msg).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut]).is_err(),
                "{} cut at {cut}",
                msg.kind_name()
            );
        }
    }
}

#[test]
fn over_cap_counts_and_strings_are_refused() {
    let addr = "127.0.0.1:1".parse().unwrap();
    let many = vec![contact_info(1, addr, "i", 10_000); MAX_PUSH_BATCH + 1];
    assert!(matches!(
        encode(&Message::PushContactInfos(many)),
        Err(EncodeError::TooMany { .. })
    ));
    let pull = PullRequest {
        from: contact_info(1, addr, "i", 10_000),
        known: vec![0; MAX_PULL_DIGEST + 1],
    };
    assert!(matches!(
        encode(&Message::PullRequest(pull)),
        Err(EncodeError::TooMany { .. })
    ));
    let long = InstanceAnnouncement::sign(&keypair(1), "x".repeat(MAX_INSTANCE_ID_LEN + 1), 1, 1);
    assert!(matches!(
        encode(&Message::Announcement(long)),
        Err(EncodeError::TooLong { .. })
    ));
    // A push datagram claiming 0xFFFF records is refused by its cap, not by allocation.
    let mut bytes = encode(&Message::PushContactInfos(vec![])).unwrap();
    bytes[HEADER_BYTES..HEADER_BYTES + 2].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(matches!(decode(&bytes), Err(DecodeError::TooMany { .. })));
    // 32 records claimed with no bytes behind them: truncated, nothing allocated.
    bytes[HEADER_BYTES..HEADER_BYTES + 2].copy_from_slice(&32u16.to_le_bytes());
    assert_eq!(decode(&bytes), Err(DecodeError::Truncated));
}

#[test]
fn contact_info_signatures_are_checked() {
    let addr = "127.0.0.1:1".parse().unwrap();
    let ci = contact_info(1, addr, "i", 10_000);
    assert_eq!(ci.verify(), Ok(()));
    let mut forged = ci.clone();
    forged.gossip_addr = "127.0.0.1:2".parse().unwrap();
    assert!(matches!(
        forged.verify(),
        Err(VerifyError::BadSignature { .. })
    ));
    let mut forged = ci.clone();
    forged.identity = keypair(2).pubkey();
    assert!(matches!(
        forged.verify(),
        Err(VerifyError::BadSignature { .. })
    ));
    let mut forged = ci.clone();
    forged.signature.0[10] ^= 1;
    assert!(forged.verify().is_err());
    // A bad signature survives decoding (it is well-formed) and is caught by verify.
    let bytes = encode(&Message::PushContactInfos(vec![forged])).unwrap();
    let Message::PushContactInfos(infos) = decode(&bytes).unwrap() else {
        panic!()
    };
    assert!(infos[0].verify().is_err());
    // Over-long fields cannot be signed.
    let mut long = ci;
    long.version = "v".repeat(MAX_VERSION_LEN + 1);
    assert!(long.sign(&keypair(1)).is_err());
}

#[test]
fn instance_age_orders_by_start_then_id() {
    let a = InstanceId {
        id: "a".into(),
        started_ms: 1,
    };
    let b = InstanceId {
        id: "b".into(),
        started_ms: 2,
    };
    assert!(a.is_older_than(&b));
    assert!(!b.is_older_than(&a));
    let b1 = InstanceId {
        id: "b".into(),
        started_ms: 1,
    };
    assert!(a.is_older_than(&b1));
}
