#!/usr/bin/env bash
# The main job, watchable: a local huione cluster with etcd over mutual TLS, a primary
# (tower in etcd) and a hot-standby secondary, and a failover.
#
#   1. huione-local-cluster starts 3 staked validators, the secondary, and etcd with
#      certificates made by huione-certs (the operator guide's file names, in demo/certs)
#   2. the guide's curl check of etcd's TLS set-up (404 with the client cert)
#   3. the primary's tower in etcd (huione-tower show)
#   4. on the secondary: wait-for-restart-window, then set-identity with the primary's
#      keypair; the primary stops, the secondary votes as the primary
#   5. huione-audit over every node's ledger: no double vote, no duplicate block
#
# Everything lives in ./demo (override with DEMO_DIR); all traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

DEMO_DIR=${DEMO_DIR:-demo}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
json() { python3 -c "import json,sys; m=json.load(open('$DEMO_DIR/cluster.json')); print($1)"; }

step "building (release)"
cargo build --release --locked -q -p huione-validator -p huione-cluster -p huione-cli
BIN=$PWD/target/release
rm -rf "$DEMO_DIR"

step "starting the cluster: 3 validators + a secondary, etcd over mTLS"
"$BIN/huione-local-cluster" --validators 3 --etcd --failover-pair --dir "$DEMO_DIR" --slot-ms 400 \
    >"$DEMO_DIR.launcher.log" 2>&1 &
launcher=$!
trap 'kill -INT $launcher 2>/dev/null || true; wait $launcher 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    [[ -f $DEMO_DIR/cluster.json ]] && [[ $(json 'm["state"]') == running ]] && break
    kill -0 $launcher 2>/dev/null || { cat "$DEMO_DIR.launcher.log"; exit 1; }
    sleep 0.5
done
tail -n 5 "$DEMO_DIR.launcher.log"

P_RPC=$(json '[n for n in m["nodes"] if n["role"]=="primary"][0]["rpc_port"]')
S_LEDGER=$(json '[n for n in m["nodes"] if n["role"]=="secondary"][0]["ledger"]')
S_RPC=$(json '[n for n in m["nodes"] if n["role"]=="secondary"][0]["rpc_port"]')
P_KEY=$(json '[n for n in m["nodes"] if n["role"]=="primary"][0]["identity_keypair"]')
P_ID=$(json '[n for n in m["nodes"] if n["role"]=="primary"][0]["identity"]')
VOTE=$(json '[n for n in m["nodes"] if n["role"]=="primary"][0]["vote_account"]')
ENDPOINT=$(json 'm["etcd"]["endpoints"][0]')
C=$DEMO_DIR/certs
rpc() { curl -s -X POST -H 'Content-Type: application/json' \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$2\",\"params\":${3:-[]}}" "http://127.0.0.1:$1/"; }
last_vote() { rpc "$S_RPC" getVoteAccounts | python3 -c "import json,sys; r=json.load(sys.stdin)['result']; print(max([a['lastVote'] for a in r['current']+r['delinquent'] if a['votePubkey']=='$VOTE'] or [0]))"; }

step "etcd TLS check from the operator guide (curl with the validator's client cert)"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$C/etcd-ca.pem" --cert "$C/validator.pem" \
    --key "$C/validator-key.pem" "https://$ENDPOINT/" || true)
echo "HTTP $code (404 = TLS set up right)"

step "waiting for the primary ($P_ID) to vote"
for _ in $(seq 60); do
    lv=$(last_vote); [[ $lv -gt 10 ]] && break; sleep 1
done
echo "vote account $VOTE: last vote $(last_vote)"
echo "primary's getIdentity: $(rpc "$P_RPC" getIdentity)"

ETCD_FLAGS=(--tower-storage etcd --etcd-endpoint "$ENDPOINT" --etcd-cacert-file "$C/etcd-ca.pem"
    --etcd-cert-file "$C/validator.pem" --etcd-key-file "$C/validator-key.pem")
step "the primary's tower in etcd"
"$BIN/huione-tower" show --identity "$P_ID" "${ETCD_FLAGS[@]}"

step "failover: on the secondary, wait-for-restart-window && set-identity validator-keypair.json"
"$BIN/huione-validator" --ledger "$S_LEDGER" wait-for-restart-window --identity "$P_ID" --min-idle-time 2 --timeout 60
"$BIN/huione-validator" --ledger "$S_LEDGER" set-identity "$P_KEY"
sleep 3
echo "secondary's getIdentity: $(rpc "$S_RPC" getIdentity)"
echo "the primary: $(tail -n 3 "$(json '[n for n in m["nodes"] if n["role"]=="primary"][0]["log"]')" | grep -o 'stopping: .*' || echo 'still running?')"
before=$(last_vote); sleep 4; after=$(last_vote)
echo "vote account $VOTE keeps voting: last vote $before -> $after"
"$BIN/huione-tower" history --identity "$P_ID" "${ETCD_FLAGS[@]}"

step "audit of every vote and block the nodes recorded"
mapfile -t LEDGERS < <(json '"\n".join(n["ledger"] for n in m["nodes"])')
"$BIN/huione-audit" "${LEDGERS[@]}"

step "cluster status: every node advances and finalizes (the old primary has exited)"
# Roots appear once votes are 32 deep (about 13 s of 400 ms slots); wait for some.
for _ in $(seq 40); do
    fin=$(rpc "$S_RPC" getSlot '[{"commitment":"finalized"}]' | python3 -c "import json,sys; print(json.load(sys.stdin).get('result',0))")
    [[ $fin -gt 5 ]] && break
    sleep 1
done
while read -r name port; do
    slot=$(rpc "$port" getSlot '[{"commitment":"processed"}]' 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['result'])" 2>/dev/null || echo exited)
    fin=$(rpc "$port" getSlot '[{"commitment":"finalized"}]' 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['result'])" 2>/dev/null || echo -)
    echo "  $name: slot $slot, finalized $fin"
done < <(json '"\n".join(n["name"]+" "+str(n["rpc_port"]) for n in m["nodes"])')
