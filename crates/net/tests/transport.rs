//! Real UDP transports on 127.0.0.1 (loopback only): discovery through one entrypoint,
//! block/vote/repair exchange, duplicate-instance detection, and bad input.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use huione_keys::Keypair;
use huione_net::*;
use huione_os::clock::now_ms;
use tokio::sync::mpsc::Receiver;

const WAIT: Duration = Duration::from_secs(5);

fn fast_config(
    kp: &Keypair,
    instance: &str,
    started_ms: u64,
    entry: Option<SocketAddr>,
) -> NetConfig {
    let mut cfg = NetConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        kp.clone(),
        InstanceId {
            id: instance.into(),
            started_ms,
        },
        genesis(),
        entry.into_iter().collect(),
    );
    cfg.gossip.push_interval_ms = 100;
    cfg.gossip.pull_interval_ms = 100;
    cfg.gossip.duplicate_reemit_ms = 200;
    cfg.tick_interval_ms = 20;
    cfg
}

async fn start(
    kp: &Keypair,
    instance: &str,
    entry: Option<SocketAddr>,
) -> (Transport, Receiver<NetEvent>) {
    Transport::bind(fast_config(kp, instance, 1_000, entry))
        .await
        .unwrap()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event that `pick` accepts, skipping others.
async fn next_matching<T>(
    rx: &mut Receiver<NetEvent>,
    mut pick: impl FnMut(NetEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("timed out waiting for an event")
            .expect("channel open");
        if let Some(t) = pick(ev) {
            return t;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_discover_each_other_and_exchange_blocks_votes_and_repairs() {
    let (a, mut a_rx) = start(&keypair(1), "a", None).await;
    let (b, mut b_rx) = start(&keypair(2), "b", Some(a.local_addr())).await;
    let (c, mut c_rx) = start(&keypair(3), "c", Some(a.local_addr())).await;
    let started = Instant::now();
    wait_until("discovery", || {
        [&a, &b, &c].iter().all(|t| t.peers().len() == 2)
    })
    .await;
    eprintln!("discovered in {:?}", started.elapsed());
    // B and C never talked to each other directly before discovery: C knows B's address.
    assert!(c
        .peers()
        .iter()
        .any(|p| p.gossip_addr == b.local_addr() && p.identity == keypair(2).pubkey()));
    assert_eq!(a.contact_info().gossip_addr, a.local_addr());

    let blk = block(20, 5);
    assert_eq!(b.broadcast_block(&blk).await.unwrap(), 2);
    for rx in [&mut a_rx, &mut c_rx] {
        let (from, got) = next_matching(rx, |e| match e {
            NetEvent::Block { from, block } => Some((from, block)),
            _ => None,
        })
        .await;
        assert_eq!((from, &got), (b.local_addr(), &blk));
    }

    let v = vote(9, 19);
    assert_eq!(c.broadcast_vote(&v).await.unwrap(), 2);
    for rx in [&mut a_rx, &mut b_rx] {
        let got = next_matching(rx, |e| match e {
            NetEvent::Vote { vote, .. } => Some(vote),
            _ => None,
        })
        .await;
        assert_eq!(got, v);
    }

    // Repair: B asks A, A answers with two blocks (one datagram each).
    let req = RepairRequest::HighestAfter { slot: 10 };
    b.send_repair_request(a.local_addr(), req).await.unwrap();
    let from = next_matching(&mut a_rx, |e| match e {
        NetEvent::RepairRequest { from, request } if request == req => Some(from),
        _ => None,
    })
    .await;
    let full = block(30, huione_core::MAX_VOTES_PER_BLOCK);
    a.send_repair_response(from, &[blk.clone(), full.clone()])
        .await
        .unwrap();
    for want in [blk, full] {
        let got = next_matching(&mut b_rx, |e| match e {
            NetEvent::RepairResponse { block, .. } => Some(block),
            _ => None,
        })
        .await;
        assert_eq!(got, want);
    }
    for t in [&a, &b, &c] {
        assert_eq!(t.stats().snapshot().dropped_total(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_instances_of_one_identity_are_reported_to_both() {
    let shared = keypair(40);
    let (entry, _entry_rx) = start(&keypair(1), "entry", None).await;
    let ep = Some(entry.local_addr());
    let (old, mut old_rx) = Transport::bind(fast_config(&shared, "old", 1_000, ep))
        .await
        .unwrap();
    let (new, mut new_rx) = Transport::bind(fast_config(&shared, "new", 2_000, ep))
        .await
        .unwrap();
    let at_old = next_matching(&mut old_rx, |e| match e {
        NetEvent::DuplicateInstance(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(at_old.identity, shared.pubkey());
    assert_eq!(
        (at_old.ours.id.as_str(), at_old.ours.started_ms),
        ("old", 1_000)
    );
    assert_eq!(
        (at_old.theirs.id.as_str(), at_old.theirs.started_ms),
        ("new", 2_000)
    );
    assert_eq!(at_old.their_gossip_addr, new.local_addr());
    assert!(at_old.we_are_older());
    let at_new = next_matching(&mut new_rx, |e| match e {
        NetEvent::DuplicateInstance(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(at_new.theirs.id, "old");
    assert!(!at_new.we_are_older());
    drop(old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_identity_makes_the_old_holder_see_a_newer_instance() {
    let primary = keypair(50);
    let (entry, _erx) = start(&keypair(1), "entry", None).await;
    let ep = Some(entry.local_addr());
    let (p, mut p_rx) = Transport::bind(fast_config(&primary, "primary", 1_000, ep))
        .await
        .unwrap();
    let (s, _s_rx) = Transport::bind(fast_config(&keypair(51), "secondary", 1_500, ep))
        .await
        .unwrap();
    wait_until("discovery", || p.peers().len() == 2 && s.peers().len() == 2).await;
    s.set_identity(
        &primary,
        InstanceId {
            id: "secondary".into(),
            started_ms: 5_000,
        },
    )
    .unwrap();
    assert_eq!(s.contact_info().identity, primary.pubkey());
    let d = next_matching(&mut p_rx, |e| match e {
        NetEvent::DuplicateInstance(d) => Some(d),
        _ => None,
    })
    .await;
    assert!(
        d.we_are_older(),
        "the old primary is told it is the older instance"
    );
    assert_eq!(d.theirs.started_ms, 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_channel_drops_and_counts_without_blocking() {
    let mut cfg = fast_config(&keypair(1), "a", 1_000, None);
    cfg.event_channel_capacity = 4;
    let (a, mut rx) = Transport::bind(cfg).await.unwrap();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let bytes = encode(&Message::Vote(vote(3, 3))).unwrap();
    let send = |n: usize| {
        for _ in 0..n {
            sender.send_to(&bytes, a.local_addr()).unwrap();
        }
    };
    send(50);
    let stats = a.stats().clone();
    wait_until("50 datagrams", || stats.snapshot().datagrams_received >= 50).await;
    // The loop kept receiving although nobody read the channel.
    send(10);
    wait_until("60 datagrams", || stats.snapshot().datagrams_received >= 60).await;
    let snap = stats.snapshot();
    assert_eq!(snap.events_delivered, 4);
    assert_eq!(snap.events_dropped_channel_full, 56);
    // Reading frees room: new events flow again.
    for _ in 0..4 {
        rx.recv().await.unwrap();
    }
    send(1);
    let got = next_matching(&mut rx, |e| match e {
        NetEvent::Vote { vote, .. } => Some(vote),
        _ => None,
    })
    .await;
    assert_eq!(got, vote(3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datagrams_are_dropped_and_counted_by_reason() {
    let (a, mut rx) = start(&keypair(1), "a", None).await;
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = a.local_addr();
    let good = encode(&Message::Vote(vote(3, 3))).unwrap();
    let mut wrong_version = good.clone();
    wrong_version[4] = 9;
    let mut forged = contact_info(7, "127.0.0.1:9".parse().unwrap(), "f", now_ms());
    forged.gossip_addr = "127.0.0.1:10".parse().unwrap();
    let datagrams: Vec<Vec<u8>> = vec![
        b"hello, world".to_vec(),
        good[..good.len() - 3].to_vec(),
        wrong_version,
        vec![0u8; MAX_DATAGRAM_BYTES + 100],
        encode(&Message::PushContactInfos(vec![forged])).unwrap(),
        good,
    ];
    for d in &datagrams {
        sender.send_to(d, to).unwrap();
    }
    let got = next_matching(&mut rx, |e| match e {
        NetEvent::Vote { vote, .. } => Some(vote),
        _ => None,
    })
    .await;
    assert_eq!(got, vote(3, 3));
    let snap = a.stats().snapshot();
    assert_eq!(snap.datagrams_received, 6);
    assert_eq!(snap.dropped(DropReason::BadMagic), 1);
    assert_eq!(snap.dropped(DropReason::Truncated), 1);
    assert_eq!(snap.dropped(DropReason::UnsupportedVersion), 1);
    assert_eq!(snap.dropped(DropReason::Oversize), 1);
    assert_eq!(snap.dropped(DropReason::BadSignature), 1);
    assert!(a.peers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_learns_its_address_from_an_entrypoint_echo() {
    let (entry, _rx) = start(&keypair(1), "entry", None).await;
    let (ip, from) = learn_own_address(
        "127.0.0.1".parse().unwrap(),
        &[entry.local_addr()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(
        (ip.to_string(), from),
        ("127.0.0.1".into(), entry.local_addr())
    );
    // Nobody answers on a port with no node: a clear error after the timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = learn_own_address(
        "127.0.0.1".parse().unwrap(),
        &[silent.local_addr().unwrap()],
        Duration::from_millis(600),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("--gossip-host"), "{err}");
    assert!(
        err.contains(&silent.local_addr().unwrap().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn bind_errors_say_what_is_wrong() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let kp = keypair(9);
    let mut cfg = fast_config(&kp, "x", 1, None);
    cfg.bind_addr = taken.local_addr().unwrap();
    let err = Transport::bind(cfg.clone())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--gossip-port"), "{err}");
    // An address that is not on this machine is not "another validator on the port".
    // (TEST-NET-1, never assigned; bind fails locally and nothing is sent.)
    cfg.bind_addr = "192.0.2.1:0".parse().unwrap();
    let err = Transport::bind(cfg).await.err().unwrap().to_string();
    assert!(err.contains("not an address of this machine"), "{err}");
    assert!(!err.contains("--gossip-port"), "{err}");
}
