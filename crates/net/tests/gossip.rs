//! The gossip state machine without sockets: explicit `now_ms`, datagrams routed in
//! memory through the real codec.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use huione_keys::Keypair;
use huione_net::*;

const T0: u64 = 1_700_000_000_000;

fn addr(i: usize) -> SocketAddr {
    format!("127.0.0.1:{}", 20_000 + i).parse().unwrap()
}

fn node_info(i: usize, instance: &str, started_ms: u64) -> NodeInfo {
    NodeInfo {
        gossip_addr: addr(i),
        rpc_addr: None,
        tpu_vote_addr: None,
        version: "test".into(),
        genesis_hash: genesis(),
        instance: InstanceId {
            id: instance.into(),
            started_ms,
        },
    }
}

fn cfg(seed: u64) -> GossipConfig {
    GossipConfig {
        rng_seed: seed,
        ..GossipConfig::default()
    }
}

struct Sim {
    nodes: Vec<(SocketAddr, Gossip, Arc<NetStats>)>,
    duplicates: Vec<(usize, DuplicateInstance)>,
}

impl Sim {
    /// Node `i` has identity `keys[i]` and bootstraps from node 0.
    fn new(keys: &[(Keypair, &str, u64)]) -> Sim {
        let nodes = keys
            .iter()
            .enumerate()
            .map(|(i, (kp, inst, started))| {
                let stats = Arc::new(NetStats::default());
                let g = Gossip::new(
                    cfg(i as u64),
                    kp.clone(),
                    node_info(i, inst, *started),
                    vec![addr(0)],
                    stats.clone(),
                    T0,
                )
                .unwrap();
                (addr(i), g, stats)
            })
            .collect();
        Sim {
            nodes,
            duplicates: vec![],
        }
    }

    fn route(&mut self, from: usize, out: Output, now_ms: u64) {
        self.duplicates
            .extend(out.duplicates.into_iter().map(|d| (from, d)));
        for o in out.sends {
            let bytes = encode(&o.msg).unwrap();
            let Some(to) = self.nodes.iter().position(|n| n.0 == o.to) else {
                continue;
            };
            let reply = match decode(&bytes).unwrap() {
                Message::PushContactInfos(infos) => self.nodes[to].1.on_push(infos, now_ms),
                Message::PullRequest(req) => {
                    self.nodes[to].1.on_pull_request(addr(from), req, now_ms)
                }
                other => panic!("gossip sent {other:?}"),
            };
            self.route(to, reply, now_ms);
        }
    }

    fn run(&mut self, from_ms: u64, to_ms: u64, step_ms: u64) {
        let mut now = from_ms;
        while now <= to_ms {
            for i in 0..self.nodes.len() {
                let out = self.nodes[i].1.tick(now);
                self.route(i, out, now);
            }
            now += step_ms;
        }
    }

    fn knows_everyone(&self) -> bool {
        self.nodes
            .iter()
            .all(|(_, g, _)| g.peers().len() == self.nodes.len() - 1)
    }
}

#[test]
fn a_new_node_learns_the_cluster_from_one_entrypoint() {
    let keys: Vec<_> = (0..5).map(|i| (keypair(i + 1), "x", T0)).collect();
    let mut sim = Sim::new(&keys);
    sim.run(T0, T0 + 3_000, 100);
    assert!(sim.knows_everyone());
    for (i, (_, g, _)) in sim.nodes.iter().enumerate() {
        let mut addrs: Vec<_> = g.peers().iter().map(|p| p.gossip_addr).collect();
        addrs.sort();
        let expect: Vec<_> = (0..5).filter(|j| *j != i).map(addr).collect();
        assert_eq!(addrs, expect, "node {i}");
        assert!(g.peers().iter().all(|p| p.verify().is_ok()));
    }
    assert!(sim.duplicates.is_empty());
}

#[test]
fn entries_expire_when_not_refreshed() {
    let keys: Vec<_> = (0..3).map(|i| (keypair(i + 1), "x", T0)).collect();
    let mut sim = Sim::new(&keys);
    sim.run(T0, T0 + 2_000, 100);
    assert!(sim.knows_everyone());
    // Node 2 dies; the others keep gossiping and forget it after the TTL.
    let dead = sim.nodes.pop().unwrap();
    let ttl = GossipConfig::default().entry_ttl_ms;
    sim.run(T0 + 2_100, T0 + 2_000 + ttl - 1_000, 100);
    assert_eq!(sim.nodes[0].1.peers().len(), 2, "still within the TTL");
    sim.run(T0 + 2_000 + ttl, T0 + 2_000 + ttl + 2_000, 100);
    for (_, g, stats) in &sim.nodes {
        assert_eq!(g.peers().len(), 1);
        assert!(g.table().get(&dead.1.own().identity).is_none());
        assert!(stats.snapshot().contact_infos_expired >= 1);
    }
}

fn lone_node(max_peers: usize) -> (Gossip, Arc<NetStats>) {
    let stats = Arc::new(NetStats::default());
    let g = Gossip::new(
        GossipConfig {
            max_peers,
            ..cfg(9)
        },
        keypair(200),
        node_info(0, "me", T0),
        vec![],
        stats.clone(),
        T0,
    )
    .unwrap();
    (g, stats)
}

#[test]
fn newer_wallclock_wins_and_bad_records_are_counted() {
    let (mut g, stats) = lone_node(2);
    let a = contact_info(1, addr(1), "a", T0 + 10);
    let newer = contact_info(1, addr(5), "a", T0 + 20);
    g.on_push(vec![newer.clone()], T0 + 30);
    g.on_push(vec![a], T0 + 30); // older: ignored
    assert_eq!(g.peers(), vec![newer.clone()]);
    assert_eq!(stats.snapshot().contact_infos_accepted, 1);

    let mut forged = contact_info(2, addr(2), "b", T0 + 10);
    forged.wallclock_ms += 1;
    g.on_push(vec![forged], T0 + 30);
    assert_eq!(stats.dropped(DropReason::BadSignature), 1);

    let mut other_cluster = contact_info(2, addr(2), "b", T0);
    other_cluster.genesis_hash = huione_core::Hash::digest(&[b"other"]);
    let other_cluster = other_cluster.sign(&keypair(2)).unwrap();
    g.on_push(vec![other_cluster], T0 + 30);
    assert_eq!(stats.dropped(DropReason::WrongCluster), 1);

    let future = contact_info(2, addr(2), "b", T0 + 60_000);
    let ancient = contact_info(2, addr(2), "b", T0 - 60_000);
    g.on_push(vec![future, ancient], T0 + 30);
    assert_eq!(stats.dropped(DropReason::BadWallclock), 2);

    // Table bounded at 2 identities: a third is refused, the two keep refreshing.
    g.on_push(vec![contact_info(2, addr(2), "b", T0 + 10)], T0 + 30);
    g.on_push(vec![contact_info(3, addr(3), "c", T0 + 10)], T0 + 30);
    assert_eq!(stats.dropped(DropReason::TableFull), 1);
    g.on_push(vec![contact_info(2, addr(2), "b", T0 + 40)], T0 + 50);
    assert_eq!(g.peers().len(), 2);
    assert!(g.peers().iter().all(|p| p.identity != keypair(3).pubkey()));
}

#[test]
fn pull_responses_hold_what_the_requester_lacks() {
    let (mut g, _) = lone_node(100);
    let records: Vec<_> = (1..=40)
        .map(|i| contact_info(i, addr(i as usize), "i", T0 + 5))
        .collect();
    g.on_push(records.clone(), T0 + 10);
    let requester = contact_info(41, addr(41), "r", T0 + 10);
    let req = PullRequest {
        from: requester.clone(),
        known: records[..10].iter().map(ContactInfo::digest).collect(),
    };
    let out = g.on_pull_request(addr(41), req, T0 + 10);
    let mut got = vec![];
    for o in out.sends {
        assert_eq!(o.to, addr(41));
        let Message::PushContactInfos(infos) = o.msg else {
            panic!()
        };
        assert!(infos.len() <= MAX_PUSH_BATCH);
        got.extend(infos);
    }
    // 30 unknown records plus the responder's own; never the requester's own.
    assert_eq!(got.len(), 31);
    assert!(got.contains(g.own()));
    assert!(got.iter().all(|c| c.identity != requester.identity));
    // And the requester was learned from its request.
    assert_eq!(g.table().get(&requester.identity), Some(&requester));
}

#[test]
fn two_instances_of_one_identity_both_hear_of_each_other() {
    // Node 0 is the entrypoint; nodes 1 and 2 run the same identity as different
    // instances; node 2 started later (it took the identity with set-identity).
    let shared = keypair(50);
    let mut sim = Sim::new(&[
        (keypair(1), "entry", T0),
        (shared.clone(), "primary", T0 - 60_000),
        (shared.clone(), "secondary", T0 + 500),
    ]);
    sim.run(T0, T0 + 3_000, 100);
    let at = |n: usize| {
        sim.duplicates
            .iter()
            .filter(move |(i, _)| *i == n)
            .map(|(_, d)| d)
    };
    let p = at(1).next().expect("the primary hears of the secondary");
    assert_eq!(p.identity, shared.pubkey());
    assert_eq!(
        (p.ours.id.as_str(), p.ours.started_ms),
        ("primary", T0 - 60_000)
    );
    assert_eq!(
        (p.theirs.id.as_str(), p.theirs.started_ms),
        ("secondary", T0 + 500)
    );
    assert_eq!(p.their_gossip_addr, addr(2));
    assert!(p.we_are_older(), "the primary is older and should exit");
    let s = at(2).next().expect("the secondary hears of the primary");
    assert_eq!(s.theirs.id, "primary");
    assert!(!s.we_are_older());
    // Repeated while it continues, but throttled: ~3 s / 2 s re-emit, not every push.
    assert!(at(1).count() <= 3, "{} events", at(1).count());
    assert_eq!(
        sim.nodes[1].2.snapshot().duplicate_instance_events,
        at(1).count() as u64
    );
}

#[test]
fn set_identity_reports_a_known_instance_of_the_new_identity_at_once() {
    let primary = keypair(60);
    let mut sim = Sim::new(&[
        (keypair(1), "entry", T0),
        (primary.clone(), "primary", T0 - 60_000),
        (keypair(61), "secondary", T0 - 30_000),
    ]);
    sim.run(T0, T0 + 2_000, 100);
    assert!(sim.knows_everyone());
    assert!(sim.duplicates.is_empty());
    let out = sim.nodes[2]
        .1
        .set_identity(
            primary.clone(),
            InstanceId {
                id: "secondary".into(),
                started_ms: T0 + 2_050,
            },
            T0 + 2_050,
        )
        .unwrap();
    assert_eq!(out.duplicates.len(), 1);
    assert!(!out.duplicates[0].we_are_older());
    assert_eq!(sim.nodes[2].1.own().identity, primary.pubkey());
    sim.run(T0 + 2_100, T0 + 3_000, 100);
    assert!(
        sim.duplicates
            .iter()
            .any(|(i, d)| *i == 1 && d.we_are_older()),
        "the primary learns its identity is in use elsewhere"
    );
}

#[test]
fn forged_pull_requests_are_not_answered() {
    let (mut g, stats) = lone_node(10);
    let mut forged = contact_info(5, addr(5), "f", T0);
    forged.gossip_addr = addr(6);
    let req = PullRequest {
        from: forged,
        known: vec![],
    };
    assert!(g.on_pull_request(addr(6), req, T0 + 10).sends.is_empty());
    assert_eq!(stats.dropped(DropReason::BadSignature), 1);
    // A stale forgery (older than the record we hold) is verified too, not answered.
    let real = contact_info(5, addr(5), "f", T0 + 5);
    g.on_push(vec![real.clone()], T0 + 10);
    let mut stale = contact_info(5, addr(5), "f", T0);
    stale.gossip_addr = addr(6);
    let out = g.on_pull_request(
        addr(6),
        PullRequest {
            from: stale,
            known: vec![],
        },
        T0 + 10,
    );
    assert!(out.sends.is_empty());
    // The real record (already held) is answered.
    let out = g.on_pull_request(
        addr(5),
        PullRequest {
            from: real,
            known: vec![],
        },
        T0 + 10,
    );
    assert_eq!(out.sends.len(), 1);
}

#[test]
fn records_advertising_unreachable_addresses_are_dropped() {
    let stats = Arc::new(NetStats::default());
    let mut info = node_info(0, "me", T0);
    info.gossip_addr = "10.0.0.2:8001".parse().unwrap();
    let mut g = Gossip::new(cfg(3), keypair(200), info, vec![], stats.clone(), T0).unwrap();
    // A peer bound to 0.0.0.0 that advertises it, and one advertising loopback: sending
    // there would reach ourselves.
    let unspecified = contact_info(1, "0.0.0.0:8001".parse().unwrap(), "a", T0);
    let loopback = contact_info(2, "127.0.0.1:8001".parse().unwrap(), "b", T0);
    let good = contact_info(3, "10.0.0.3:8001".parse().unwrap(), "c", T0);
    g.on_push(vec![unspecified, loopback, good.clone()], T0 + 10);
    assert_eq!(g.peers(), vec![good]);
    assert_eq!(stats.dropped(DropReason::UnreachableAddress), 2);
    // On loopback (a one-machine cluster) loopback peers are fine; unspecified never is.
    let (mut g, stats) = lone_node(8);
    let loopback = contact_info(2, "127.0.0.1:8001".parse().unwrap(), "b", T0);
    let unspecified = contact_info(1, "0.0.0.0:8001".parse().unwrap(), "a", T0);
    g.on_push(vec![loopback.clone(), unspecified], T0 + 10);
    assert_eq!(g.peers(), vec![loopback]);
    assert_eq!(stats.dropped(DropReason::UnreachableAddress), 1);
}
