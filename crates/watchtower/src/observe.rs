//! One check: probe the primary, the standby and any extra cluster nodes concurrently,
//! and turn their JSON-RPC answers into an [`Observation`]. The probing is async I/O;
//! reading the answers ([`primary_rpc_from`], [`vote_view_from`], ...) is pure.

use std::time::Duration;

use serde_json::{json, Value};

use crate::decision::{Observation, PrimaryRpc, StandbyView, VoteView};
use huione_rpc::client::{ClientError, Endpoint, RpcClient};

/// Solana's "node is unhealthy" JSON-RPC error code (getHealth when behind).
pub const NODE_UNHEALTHY: i64 = -32005;

/// Whom to probe, and what identifies the primary.
#[derive(Clone, Debug)]
pub struct Targets {
    pub primary_rpc: Endpoint,
    /// None until known (asked from the standby's admin socket when not given).
    pub standby_rpc: Option<Endpoint>,
    pub cluster_rpcs: Vec<Endpoint>,
    pub primary_identity: String,
    /// The primary's vote account; found by node identity when not given.
    pub vote_account: Option<String>,
    pub timeout: Duration,
}

fn processed() -> Value {
    json!([{ "commitment": "processed" }])
}

/// Which probes could not reach their node, and why (for warnings and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unreachable {
    pub primary: Option<String>,
    pub standby: Option<String>,
}

fn unreachable_reason(r: &Result<Vec<Value>, ClientError>) -> Option<String> {
    match r {
        Err(e @ (ClientError::Unreachable { .. } | ClientError::Timeout { .. })) => {
            Some(e.to_string())
        }
        _ => None,
    }
}

/// Probes everything once, concurrently; takes at most `targets.timeout`.
pub async fn check(t: &Targets) -> (Observation, Unreachable) {
    let primary_calls = [
        ("getHealth", json!([])),
        ("getSlot", processed()),
        ("huioneStatus", json!([])),
    ];
    let standby_calls = [
        ("getHealth", json!([])),
        ("getSlot", processed()),
        ("getIdentity", json!([])),
        ("getVoteAccounts", processed()),
        ("getClusterNodes", json!([])),
        ("huioneStatus", json!([])),
    ];
    let cluster_calls = [
        ("getVoteAccounts", processed()),
        ("getClusterNodes", json!([])),
    ];
    let primary = probe(&t.primary_rpc, &primary_calls, t.timeout);
    let standby = async {
        match &t.standby_rpc {
            Some(ep) => probe(ep, &standby_calls, t.timeout).await,
            None => Err(ClientError::Unreachable {
                addr: "the standby".into(),
                reason: "its RPC address is not known yet (no --standby-rpc, and its admin \
                         socket has not answered)"
                    .into(),
            }),
        }
    };
    let cluster = join_all(
        t.cluster_rpcs
            .iter()
            .map(|ep| probe(ep, &cluster_calls, t.timeout))
            .collect(),
    );
    let (primary, standby, cluster) = tokio::join!(primary, standby, cluster);
    let unreachable = Unreachable {
        primary: unreachable_reason(&primary),
        standby: unreachable_reason(&standby),
    };
    (build_observation(t, primary, standby, cluster), unreachable)
}

/// One JSON-RPC batch to `ep`, bounded by `timeout`.
async fn probe(
    ep: &Endpoint,
    calls: &[(&str, Value)],
    timeout: Duration,
) -> Result<Vec<Value>, ClientError> {
    RpcClient::new(ep.clone())
        .with_timeout(timeout)
        .batch(calls)
        .await
}

/// Awaits all futures together (each is bounded by its own timeout).
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in pinned.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// Assembles one observation from the three probes' answers (pure).
pub fn build_observation(
    t: &Targets,
    primary: Result<Vec<Value>, ClientError>,
    standby: Result<Vec<Value>, ClientError>,
    cluster: Vec<Result<Vec<Value>, ClientError>>,
) -> Observation {
    let (primary_rpc, primary_slot, primary_silence_ms) = match &primary {
        Ok(r) => (
            primary_rpc_from(&r[0]),
            r[1].get("result").and_then(Value::as_u64),
            r.get(2).and_then(silence_from),
        ),
        Err(ClientError::Unreachable { reason, .. }) => {
            (PrimaryRpc::Unreachable(reason.clone()), None, None)
        }
        Err(ClientError::Timeout { .. }) => (PrimaryRpc::Timeout, None, None),
        Err(
            e @ (ClientError::Status { .. }
            | ClientError::Protocol { .. }
            | ClientError::Rpc { .. }),
        ) => (PrimaryRpc::Error(e.to_string()), None, None),
    };
    let mut vote_views = Vec::new();
    let mut gossip = Vec::new();
    let standby_silence_ms = standby
        .as_ref()
        .ok()
        .and_then(|r| r.get(5).and_then(silence_from));
    let (standby_view, standby_slot) = match &standby {
        Ok(r) => {
            let view = r[2]
                .pointer("/result/identity")
                .and_then(Value::as_str)
                .map(|id| StandbyView {
                    identity: id.to_string(),
                    caught_up: r[0].get("result").and_then(Value::as_str) == Some("ok"),
                });
            vote_views.push(vote_view_from(
                &r[3],
                &t.primary_identity,
                t.vote_account.as_deref(),
            ));
            gossip.push(gossip_presence_from(&r[4], &t.primary_identity));
            (view, r[1].get("result").and_then(Value::as_u64))
        }
        Err(_) => (None, None),
    };
    for r in cluster.iter().flatten() {
        vote_views.push(vote_view_from(
            &r[0],
            &t.primary_identity,
            t.vote_account.as_deref(),
        ));
        gossip.push(gossip_presence_from(&r[1], &t.primary_identity));
    }
    Observation {
        primary_rpc,
        primary_slot,
        standby_slot,
        standby: standby_view,
        // The view most favourable to the primary: one stale node must not trigger.
        votes: vote_views
            .into_iter()
            .flatten()
            .min_by_key(VoteView::lag_slots),
        gossip_present: combine_gossip(&gossip),
        primary_silence_ms,
        standby_silence_ms,
    }
}

/// Reads `huioneStatus`'s `peerMessageAgeMs`; None for a node that does not answer it
/// (another version) or has never heard from a peer.
pub fn silence_from(reply: &Value) -> Option<u64> {
    reply
        .pointer("/result/peerMessageAgeMs")
        .and_then(Value::as_u64)
}

/// Reads a `getHealth` reply.
pub fn primary_rpc_from(reply: &Value) -> PrimaryRpc {
    if reply.get("result").and_then(Value::as_str) == Some("ok") {
        return PrimaryRpc::Healthy;
    }
    match reply.get("error") {
        Some(e) if e.get("code").and_then(Value::as_i64) == Some(NODE_UNHEALTHY) => {
            PrimaryRpc::Behind(e.pointer("/data/numSlotsBehind").and_then(Value::as_u64))
        }
        Some(e) => PrimaryRpc::Error(
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("getHealth failed")
                .to_string(),
        ),
        None => PrimaryRpc::Error(format!("unexpected getHealth reply {reply}")),
    }
}

/// Reads a `getVoteAccounts` reply: the primary's account (by vote pubkey if known, else
/// by node identity) against the newest vote of any other account.
pub fn vote_view_from(
    reply: &Value,
    primary_identity: &str,
    vote_account: Option<&str>,
) -> Option<VoteView> {
    let result = reply.get("result")?;
    let accounts: Vec<&Value> = ["current", "delinquent"]
        .iter()
        .filter_map(|k| result.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let is_primary = |a: &Value| match vote_account {
        Some(v) => a.get("votePubkey").and_then(Value::as_str) == Some(v),
        None => a.get("nodePubkey").and_then(Value::as_str) == Some(primary_identity),
    };
    let last_vote = |a: &Value| a.get("lastVote").and_then(Value::as_u64);
    let primary_last_vote = accounts
        .iter()
        .find(|a| is_primary(a))
        .and_then(|a| last_vote(a))?;
    // 0 = no vote of the account has landed in this node's bank yet (a cluster starting
    // up): that says nothing about the primary's progress, so it is not a lag.
    if primary_last_vote == 0 {
        return None;
    }
    let cluster_last_vote = accounts
        .iter()
        .filter(|a| !is_primary(a))
        .filter_map(|a| last_vote(a))
        .max()
        .unwrap_or(primary_last_vote);
    Some(VoteView {
        primary_last_vote,
        cluster_last_vote,
    })
}

/// Reads a `getClusterNodes` reply: is the primary identity in the gossip table?
pub fn gossip_presence_from(reply: &Value, primary_identity: &str) -> Option<bool> {
    let nodes = reply.get("result")?.as_array()?;
    Some(
        nodes
            .iter()
            .any(|n| n.get("pubkey").and_then(Value::as_str) == Some(primary_identity)),
    )
}

/// Present if any node lists it; absent only if some node answered and none lists it.
pub fn combine_gossip(views: &[Option<bool>]) -> Option<bool> {
    let answered: Vec<bool> = views.iter().flatten().copied().collect();
    if answered.is_empty() {
        None
    } else {
        Some(answered.contains(&true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        let ep = Endpoint::parse("127.0.0.1:1").unwrap();
        Targets {
            primary_rpc: ep.clone(),
            standby_rpc: Some(ep),
            cluster_rpcs: vec![],
            primary_identity: "P".into(),
            vote_account: None,
            timeout: Duration::from_millis(100),
        }
    }

    fn accounts(primary: u64, other: u64) -> Value {
        json!({"result": {
            "current": [
                {"votePubkey": "VP", "nodePubkey": "P", "lastVote": primary},
                {"votePubkey": "VO", "nodePubkey": "O", "lastVote": other},
            ],
            "delinquent": [{"votePubkey": "VD", "nodePubkey": "D", "lastVote": 3}]
        }})
    }

    #[test]
    fn reads_health() {
        assert_eq!(
            primary_rpc_from(&json!({"result": "ok"})),
            PrimaryRpc::Healthy
        );
        let behind = json!({"error": {"code": -32005, "message": "Node is behind by 9 slots",
            "data": {"numSlotsBehind": 9}}});
        assert_eq!(primary_rpc_from(&behind), PrimaryRpc::Behind(Some(9)));
        let unknown = json!({"error": {"code": -32005, "message": "Node is unhealthy",
            "data": {"numSlotsBehind": null}}});
        assert_eq!(primary_rpc_from(&unknown), PrimaryRpc::Behind(None));
        assert!(
            matches!(primary_rpc_from(&json!({"error": {"code": -32601, "message": "x"}})), PrimaryRpc::Error(m) if m == "x")
        );
        assert!(matches!(
            primary_rpc_from(&Value::Null),
            PrimaryRpc::Error(_)
        ));
    }

    #[test]
    fn reads_vote_views() {
        let v = vote_view_from(&accounts(90, 100), "P", None).unwrap();
        assert_eq!(
            (v.primary_last_vote, v.cluster_last_vote, v.lag_slots()),
            (90, 100, 10)
        );
        let v = vote_view_from(&accounts(90, 100), "nobody", Some("VP")).unwrap();
        assert_eq!(v.lag_slots(), 10);
        assert_eq!(vote_view_from(&accounts(90, 100), "nobody", None), None);
        assert_eq!(vote_view_from(&json!({"error": {}}), "P", None), None);
        // No vote of the primary has landed yet (start-up): unknown, not a 100-slot lag.
        assert_eq!(vote_view_from(&accounts(0, 100), "P", None), None);
    }

    #[test]
    fn reads_gossip() {
        let nodes = json!({"result": [{"pubkey": "O"}, {"pubkey": "P"}]});
        assert_eq!(gossip_presence_from(&nodes, "P"), Some(true));
        assert_eq!(gossip_presence_from(&nodes, "X"), Some(false));
        assert_eq!(gossip_presence_from(&Value::Null, "P"), None);
        assert_eq!(combine_gossip(&[None, Some(false)]), Some(false));
        assert_eq!(combine_gossip(&[Some(false), Some(true)]), Some(true));
        assert_eq!(combine_gossip(&[None]), None);
    }

    #[test]
    fn builds_observations_favouring_the_primary() {
        let t = targets();
        let standby = Ok(vec![
            json!({"result": "ok"}),
            json!({"result": 120}),
            json!({"result": {"identity": "S"}}),
            accounts(50, 100),
            json!({"result": [{"pubkey": "O"}]}),
        ]);
        let cluster = vec![
            Ok(vec![
                accounts(95, 100),
                json!({"result": [{"pubkey": "P"}]}),
            ]),
            Err(ClientError::Timeout {
                addr: "x".into(),
                timeout_ms: 1,
            }),
        ];
        let primary = Err(ClientError::Timeout {
            addr: "x".into(),
            timeout_ms: 1,
        });
        let obs = build_observation(&t, primary, standby, cluster);
        assert_eq!(obs.primary_rpc, PrimaryRpc::Timeout);
        assert_eq!(obs.standby_slot, Some(120));
        assert_eq!(
            obs.standby,
            Some(StandbyView {
                identity: "S".into(),
                caught_up: true
            })
        );
        assert_eq!(obs.votes.unwrap().lag_slots(), 5);
        assert_eq!(obs.gossip_present, Some(true));

        let primary = Ok(vec![json!({"result": "ok"}), json!({"result": 119})]);
        let down = Err(ClientError::Unreachable {
            addr: "x".into(),
            reason: "refused".into(),
        });
        let obs = build_observation(&t, primary, down, vec![]);
        assert_eq!(obs.primary_rpc, PrimaryRpc::Healthy);
        assert_eq!(obs.primary_slot, Some(119));
        assert_eq!(
            (obs.standby, obs.votes, obs.gossip_present),
            (None, None, None)
        );
    }

    #[test]
    fn reads_peer_silence_and_ignores_a_node_without_huione_status() {
        let t = targets();
        let status = |age: u64| json!({"result": {"peerMessageAgeMs": age, "slot": 7}});
        let primary = Ok(vec![
            json!({"result": "ok"}),
            json!({"result": 119}),
            status(1_450),
        ]);
        let standby = Ok(vec![
            json!({"result": "ok"}),
            json!({"result": 120}),
            json!({"result": {"identity": "S"}}),
            accounts(99, 100),
            json!({"result": [{"pubkey": "P"}]}),
            status(90),
        ]);
        let obs = build_observation(&t, primary, standby, vec![]);
        assert_eq!(
            (obs.primary_silence_ms, obs.standby_silence_ms),
            (Some(1_450), Some(90))
        );
        // Another version answers "method not found"; a node that never heard a peer null.
        let old = Ok(vec![
            json!({"result": "ok"}),
            json!({"result": 119}),
            json!({"error": {"code": -32601, "message": "Method not found"}}),
        ]);
        let never = Ok(vec![
            json!({"result": "ok"}),
            json!({"result": 120}),
            json!({"result": {"identity": "S"}}),
            accounts(99, 100),
            json!({"result": [{"pubkey": "P"}]}),
            json!({"result": {"peerMessageAgeMs": null}}),
        ]);
        let obs = build_observation(&t, old, never, vec![]);
        assert_eq!(
            (obs.primary_silence_ms, obs.standby_silence_ms),
            (None, None)
        );
        assert_eq!(obs.primary_rpc, PrimaryRpc::Healthy);
    }
}
