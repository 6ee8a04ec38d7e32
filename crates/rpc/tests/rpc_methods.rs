//! Every JSON-RPC method against a server on 127.0.0.1:0 with a fixed snapshot: field
//! names, JSON types and values as Solana's RPC returns them.

mod common;

use std::collections::BTreeSet;

use common::*;
use huione_rpc::*;
use serde_json::{json, Value};

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

#[tokio::test]
async fn get_health_ok_and_unhealthy() {
    let t = start(RpcServerConfig::default()).await;
    assert_eq!(result(t.addr, "getHealth", Value::Null).await, json!("ok"));

    let mut behind = snapshot();
    behind.health = Health::Behind {
        num_slots_behind: 42,
    };
    t.snapshots.send(behind.into()).unwrap();
    let e = error(t.addr, "getHealth", Value::Null).await;
    assert_eq!(e["code"], -32005);
    assert_eq!(e["message"], "Node is behind by 42 slots");
    assert_eq!(e["data"], json!({"numSlotsBehind": 42}));

    let mut unknown = snapshot();
    unknown.health = Health::Unknown;
    t.snapshots.send(unknown.into()).unwrap();
    let e = error(t.addr, "getHealth", Value::Null).await;
    assert_eq!(e["code"], -32005);
    assert_eq!(e["message"], "Node is unhealthy");
    assert_eq!(e["data"], json!({"numSlotsBehind": null}));

    let mut full = snapshot();
    full.health = Health::Unknown;
    full.health_reason = Some("etcd alarm NOSPACE raised".into());
    t.snapshots.send(full.into()).unwrap();
    let e = error(t.addr, "getHealth", Value::Null).await;
    assert_eq!(e["code"], -32005);
    assert_eq!(e["message"], "Node is unhealthy: etcd alarm NOSPACE raised");
    assert_eq!(
        e["data"],
        json!({"numSlotsBehind": null, "reason": "etcd alarm NOSPACE raised"})
    );
    t.server.shutdown().await;
}

#[tokio::test]
async fn get_slot_per_commitment() {
    let t = start(RpcServerConfig::default()).await;
    assert_eq!(result(t.addr, "getSlot", Value::Null).await, json!(168));
    assert_eq!(result(t.addr, "getSlot", json!([])).await, json!(168));
    for (c, want) in [
        ("processed", 200),
        ("confirmed", 199),
        ("finalized", 168),
        ("recent", 200),
    ] {
        let got = result(t.addr, "getSlot", json!([{"commitment": c}])).await;
        assert_eq!(got, json!(want), "{c}");
    }
    let e = error(t.addr, "getSlot", json!([{"commitment": "bogus"}])).await;
    assert_eq!(e["code"], -32602);
    let e = error(
        t.addr,
        "getSlot",
        json!([{"commitment": "processed", "minContextSlot": 500}]),
    )
    .await;
    assert_eq!(e["code"], -32016);
    assert_eq!(e["data"], json!({"contextSlot": 200}));
    t.server.shutdown().await;
}

#[tokio::test]
async fn get_identity_version_genesis() {
    let t = start(RpcServerConfig::default()).await;
    let r = result(t.addr, "getIdentity", Value::Null).await;
    assert_eq!(keys(&r), set(&["identity"]));
    assert_eq!(r["identity"], key(1).to_string());

    let r = result(t.addr, "getVersion", Value::Null).await;
    assert_eq!(keys(&r), set(&["solana-core", "feature-set"]));
    assert_eq!(r["solana-core"], "0.1.0");
    assert_eq!(r["feature-set"], 42);

    let r = result(t.addr, "getGenesisHash", Value::Null).await;
    assert_eq!(r, json!(Hash32([9; 32]).to_string()));
    assert_eq!(
        result(t.addr, "getFirstAvailableBlock", Value::Null).await,
        json!(100)
    );
    assert_eq!(
        result(t.addr, "minimumLedgerSlot", Value::Null).await,
        json!(100)
    );
    assert_eq!(
        result(t.addr, "getTransactionCount", Value::Null).await,
        json!(1234)
    );
    t.server.shutdown().await;
}

#[tokio::test]
async fn get_epoch_info_and_schedule() {
    let t = start(RpcServerConfig::default()).await;
    let r = result(t.addr, "getEpochInfo", json!([{"commitment": "processed"}])).await;
    assert_eq!(
        r,
        json!({
            "absoluteSlot": 200, "blockHeight": 190, "epoch": 3, "slotIndex": 8,
            "slotsInEpoch": 64, "transactionCount": 1234
        })
    );
    let r = result(t.addr, "getEpochInfo", Value::Null).await;
    assert_eq!(r["absoluteSlot"], 168);
    assert_eq!(r["epoch"], 2);
    assert_eq!(r["slotIndex"], 40);

    let r = result(t.addr, "getEpochSchedule", Value::Null).await;
    assert_eq!(
        r,
        json!({"slotsPerEpoch": 64, "leaderScheduleSlotOffset": 64, "warmup": false,
               "firstNormalEpoch": 0, "firstNormalSlot": 0})
    );
    t.server.shutdown().await;
}

#[tokio::test]
async fn get_block_height() {
    let t = start(RpcServerConfig::default()).await;
    assert_eq!(
        result(t.addr, "getBlockHeight", Value::Null).await,
        json!(158)
    );
    let r = result(
        t.addr,
        "getBlockHeight",
        json!([{"commitment": "confirmed"}]),
    )
    .await;
    assert_eq!(r, json!(189));
    t.server.shutdown().await;
}

#[tokio::test]
async fn get_vote_accounts_current_and_delinquent() {
    let t = start(RpcServerConfig::default()).await;
    let r = result(
        t.addr,
        "getVoteAccounts",
        json!([{"commitment": "processed"}]),
    )
    .await;
    assert_eq!(keys(&r), set(&["current", "delinquent"]));
    let current = r["current"].as_array().unwrap();
    let delinquent = r["delinquent"].as_array().unwrap();
    assert_eq!(current.len(), 2);
    assert_eq!(delinquent.len(), 1);
    let a = &current[0];
    assert_eq!(
        keys(a),
        set(&[
            "votePubkey",
            "nodePubkey",
            "activatedStake",
            "epochVoteAccount",
            "commission",
            "lastVote",
            "epochCredits",
            "rootSlot"
        ])
    );
    assert_eq!(a["votePubkey"], key(11).to_string());
    assert_eq!(a["nodePubkey"], key(1).to_string());
    assert_eq!(a["activatedStake"], 1_000_000);
    assert_eq!(a["epochVoteAccount"], true);
    assert_eq!(a["commission"], 10);
    assert_eq!(a["lastVote"], 199);
    assert_eq!(a["rootSlot"], 168);
    assert_eq!(a["epochCredits"], json!([[2, 100, 50], [3, 120, 100]]));
    assert_eq!(delinquent[0]["votePubkey"], key(13).to_string());

    let r = result(
        t.addr,
        "getVoteAccounts",
        json!([{"votePubkey": key(12).to_string()}]),
    )
    .await;
    assert_eq!(r["current"].as_array().unwrap().len(), 1);
    assert_eq!(r["delinquent"].as_array().unwrap().len(), 0);
    let e = error(
        t.addr,
        "getVoteAccounts",
        json!([{"votePubkey": "not-a-key"}]),
    )
    .await;
    assert_eq!(e["code"], -32602);
    t.server.shutdown().await;
}

#[tokio::test]
async fn get_cluster_nodes() {
    let t = start(RpcServerConfig::default()).await;
    let r = result(t.addr, "getClusterNodes", Value::Null).await;
    let nodes = r.as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    let n = &nodes[0];
    for field in [
        "pubkey",
        "gossip",
        "tpu",
        "rpc",
        "version",
        "featureSet",
        "shredVersion",
    ] {
        assert!(n.get(field).is_some(), "missing {field}: {n}");
    }
    assert_eq!(n["pubkey"], key(1).to_string());
    assert_eq!(n["gossip"], "127.0.0.1:8000");
    assert_eq!(n["tpu"], "127.0.0.1:8002");
    assert_eq!(n["rpc"], "127.0.0.1:8010");
    assert_eq!(n["tpuQuic"], Value::Null);
    assert_eq!(n["version"], "huione 0.1.0");
    assert_eq!(n["featureSet"], 42);
    assert_eq!(n["shredVersion"], 7);
    t.server.shutdown().await;
}

#[tokio::test]
async fn get_leader_schedule_forms() {
    let t = start(RpcServerConfig::default()).await;
    // Default: the epoch of the finalized slot (168 → epoch 2), which is unknown: null.
    assert_eq!(
        result(t.addr, "getLeaderSchedule", Value::Null).await,
        Value::Null
    );
    let r = result(t.addr, "getLeaderSchedule", json!([200])).await;
    let map = r.as_object().unwrap();
    assert_eq!(map.len(), 3);
    let a = r[key(1).to_string()].as_array().unwrap();
    assert_eq!(
        &a[..5],
        &[json!(0), json!(1), json!(2), json!(3), json!(12)]
    );
    let total: usize = map.values().map(|v| v.as_array().unwrap().len()).sum();
    assert_eq!(total, SLOTS_PER_EPOCH as usize);

    let r = result(
        t.addr,
        "getLeaderSchedule",
        json!([null, {"identity": key(2).to_string()}]),
    )
    .await;
    assert_eq!(r, Value::Null, "the finalized slot's epoch (2) is unknown");
    let r = result(
        t.addr,
        "getLeaderSchedule",
        json!([{"identity": key(2).to_string(), "commitment": "processed"}]),
    )
    .await;
    assert_eq!(keys(&r), set(&[key(2).to_string().as_str()]));
    assert_eq!(r[key(2).to_string()][0], 4);
    // A slot in an epoch we have no schedule for.
    assert_eq!(
        result(t.addr, "getLeaderSchedule", json!([10_000])).await,
        Value::Null
    );
    let e = error(
        t.addr,
        "getLeaderSchedule",
        json!([null, {"identity": "zz"}]),
    )
    .await;
    assert_eq!(e["code"], -32602);
    let e = error(t.addr, "getLeaderSchedule", json!(["x"])).await;
    assert_eq!(e["code"], -32602);
    t.server.shutdown().await;
}

#[tokio::test]
async fn get_block_json_shape() {
    let t = start(RpcServerConfig::default()).await;
    let b = result(
        t.addr,
        "getBlock",
        json!([196, {"commitment": "confirmed"}]),
    )
    .await;
    assert_eq!(
        keys(&b),
        set(&[
            "blockhash",
            "previousBlockhash",
            "parentSlot",
            "blockHeight",
            "blockTime",
            "transactions",
            "rewards"
        ])
    );
    assert_eq!(b["parentSlot"], 194);
    assert_eq!(b["blockHeight"], 186);
    assert_eq!(b["blockTime"], 1_700_000_196i64);
    assert_eq!(b["blockhash"], Hash32([196; 32]).to_string());
    assert_eq!(b["previousBlockhash"], Hash32([194; 32]).to_string());
    assert_eq!(b["rewards"], json!([]));
    let txs = b["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 2);
    let tx = &txs[0];
    assert_eq!(keys(tx), set(&["transaction", "meta"]));
    let msg = &tx["transaction"]["message"];
    assert_eq!(
        tx["transaction"]["signatures"],
        json!([Sig64([1; 64]).to_string()])
    );
    assert_eq!(
        msg["header"],
        json!({"numRequiredSignatures": 1, "numReadonlySignedAccounts": 0, "numReadonlyUnsignedAccounts": 3})
    );
    let account_keys = msg["accountKeys"].as_array().unwrap();
    assert_eq!(account_keys.len(), 5);
    assert_eq!(account_keys[0], key(1).to_string());
    assert_eq!(account_keys[1], key(11).to_string());
    assert_eq!(
        account_keys[4],
        "Vote111111111111111111111111111111111111111"
    );
    let ix = &msg["instructions"][0];
    assert_eq!(ix["programIdIndex"], 4);
    assert_eq!(ix["accounts"], json!([1, 2, 3, 0]));
    let data = bs58::decode(ix["data"].as_str().unwrap())
        .into_vec()
        .unwrap();
    assert_eq!(&data[..4], &[2, 0, 0, 0], "VoteInstruction::Vote");
    assert_eq!(msg["recentBlockhash"], Hash32([1; 32]).to_string());
    let meta = &tx["meta"];
    assert_eq!(meta["err"], Value::Null);
    assert_eq!(meta["status"], json!({"Ok": null}));
    assert_eq!(meta["fee"], 5000);
    assert_eq!(meta["preBalances"].as_array().unwrap().len(), 5);
    t.server.shutdown().await;
}

#[tokio::test]
async fn get_block_encodings_and_details() {
    let t = start(RpcServerConfig::default()).await;
    let cfg = |extra: Value| {
        let mut c = json!({"commitment": "confirmed"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        json!([198, c])
    };
    let b = result(
        t.addr,
        "getBlock",
        cfg(json!({"encoding": "base64", "maxSupportedTransactionVersion": 0})),
    )
    .await;
    let tx = &b["transactions"][0];
    assert_eq!(tx["version"], "legacy");
    assert_eq!(tx["transaction"][1], "base64");
    assert!(tx["transaction"][0].as_str().unwrap().len() > 100);

    let b = result(t.addr, "getBlock", cfg(json!({"encoding": "base58"}))).await;
    assert_eq!(b["transactions"][0]["transaction"][1], "base58");

    let b = result(t.addr, "getBlock", cfg(json!({"encoding": "jsonParsed"}))).await;
    let k = &b["transactions"][0]["transaction"]["message"]["accountKeys"][0];
    assert_eq!(keys(k), set(&["pubkey", "writable", "signer", "source"]));
    assert_eq!(k["signer"], true);

    let b = result(
        t.addr,
        "getBlock",
        cfg(json!({"transactionDetails": "signatures", "rewards": false})),
    )
    .await;
    assert_eq!(
        keys(&b),
        set(&[
            "blockhash",
            "previousBlockhash",
            "parentSlot",
            "blockHeight",
            "blockTime",
            "signatures"
        ])
    );
    assert_eq!(b["signatures"].as_array().unwrap().len(), 2);

    let b = result(
        t.addr,
        "getBlock",
        cfg(json!({"transactionDetails": "none"})),
    )
    .await;
    assert!(b.get("transactions").is_none() && b.get("signatures").is_none());

    let b = result(
        t.addr,
        "getBlock",
        cfg(json!({"transactionDetails": "accounts"})),
    )
    .await;
    assert_eq!(
        keys(&b["transactions"][0]["transaction"]),
        set(&["signatures", "accountKeys"])
    );

    // Deprecated form: a bare encoding string, default commitment finalized.
    // (196 is above the finalized slot, so parsing succeeded when the error is -32004.)
    let e = error(t.addr, "getBlock", json!([196, "base64"])).await;
    assert_eq!(e["code"], -32004);
    let e = error(t.addr, "getBlock", json!([196, "xml"])).await;
    assert_eq!(e["code"], -32602);
    let e = error(t.addr, "getBlock", cfg(json!({"encoding": "xml"}))).await;
    assert_eq!(e["code"], -32602);
    t.server.shutdown().await;
}

#[tokio::test]
async fn get_block_missing_slots() {
    let t = start(RpcServerConfig::default()).await;
    // Above the finalized slot (default commitment).
    let e = error(t.addr, "getBlock", json!([190])).await;
    assert_eq!(e["code"], -32004);
    assert_eq!(e["message"], "Block not available for slot 190");
    // Above the confirmed slot.
    let e = error(
        t.addr,
        "getBlock",
        json!([200, {"commitment": "confirmed"}]),
    )
    .await;
    assert_eq!(e["code"], -32004);
    // Skipped slot within the published window.
    let e = error(
        t.addr,
        "getBlock",
        json!([195, {"commitment": "confirmed"}]),
    )
    .await;
    assert_eq!(e["code"], -32007);
    // Cleaned up.
    let e = error(t.addr, "getBlock", json!([50])).await;
    assert_eq!(e["code"], -32001);
    // processed is not allowed.
    let e = error(
        t.addr,
        "getBlock",
        json!([196, {"commitment": "processed"}]),
    )
    .await;
    assert_eq!(e["code"], -32602);
    // Missing slot parameter.
    let e = error(t.addr, "getBlock", json!([])).await;
    assert_eq!(e["code"], -32602);
    t.server.shutdown().await;
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let t = start(RpcServerConfig::default()).await;
    let r = http(t.addr, "GET", "/health", b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    result(t.addr, "getSlot", Value::Null).await;
    let r = http(t.addr, "GET", "/metrics", b"").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.contains("huione_rpc_requests_total{method=\"getSlot\"} 1"),
        "{text}"
    );
    huione_rpc::metrics::check_exposition(&text).unwrap();
    t.server.shutdown().await;
}

/// huione's own `huioneStatus`: ages measured when the call is answered, against the times
/// the node recorded (so a node whose loop stopped publishing shows growing ages too).
#[tokio::test]
async fn huione_status_reports_ages_at_answer_time() {
    let t = start(RpcServerConfig::default()).await;
    let never = result(t.addr, "huioneStatus", Value::Null).await;
    assert_eq!(
        keys(&never),
        set(&[
            "identity",
            "slot",
            "peerMessageAgeMs",
            "towerStoreAgeMs",
            "snapshotAgeMs"
        ])
    );
    assert_eq!(never["peerMessageAgeMs"], Value::Null);
    assert_eq!(never["towerStoreAgeMs"], Value::Null);
    assert_eq!(never["slot"], 200);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut s = snapshot();
    s.freshness = Freshness {
        published_ms: now - 100,
        peer_message_ms: Some(now - 5_000),
        tower_store_ms: Some(now - 300),
    };
    t.snapshots.send(s.into()).unwrap();
    let r = result(t.addr, "huioneStatus", Value::Null).await;
    let age = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    // At least the recorded age, and not much more (the call takes milliseconds).
    assert!((5_000..10_000).contains(&age("peerMessageAgeMs")), "{r}");
    assert!((300..5_300).contains(&age("towerStoreAgeMs")), "{r}");
    assert!((100..5_100).contains(&age("snapshotAgeMs")), "{r}");
    let e = error(t.addr, "huioneStatus", json!([1])).await;
    assert_eq!(e["code"], -32602);
}
