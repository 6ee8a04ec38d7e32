#!/usr/bin/env bash
# The main job, watchable: the operator guide's set-up on one machine, then a failover.
#
#  1. keys for the primary's identity and the secondary's own identity (huione-keygen)
#  2. certificates for etcd and the validator (huione-certs; replaces cfssl)
#  3. etcd with mutual TLS, checked with curl as the guide does (404 with the client
#     cert, refused without it)
#  4. a primary voting with its tower in etcd, a secondary taking the identity over:
#     the secondary acquires the lock, loads the primary's tower and votes on; the
#     primary's next store is fenced off and it exits. No slot is voted twice.
#
# Everything lives in ./demo (override with DEMO_DIR); etcd listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

DEMO_DIR=${DEMO_DIR:-demo}
PORT=${DEMO_ETCD_PORT:-23790}
PEER_PORT=$((PORT + 1))
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building (release)"
cargo build --release --locked -q -p huione-cli -p huione-bench
BIN=target/release
rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step "keys"
$BIN/huione-keygen new -o "$DEMO_DIR/validator-keypair.json"
$BIN/huione-keygen new -o "$DEMO_DIR/secondary-validator-keypair.json"
ID=$($BIN/huione-keygen pubkey "$DEMO_DIR/validator-keypair.json")

step "certificates (huione-certs new --dir certs --hosts localhost,127.0.0.1)"
$BIN/huione-certs new --dir "$DEMO_DIR/certs" --hosts localhost,127.0.0.1
$BIN/huione-certs show --dir "$DEMO_DIR/certs"

step "etcd with mutual TLS on 127.0.0.1:$PORT"
C="$DEMO_DIR/certs"
etcd --name demo --data-dir "$DEMO_DIR/etcd-data" \
    --listen-client-urls "https://127.0.0.1:$PORT" --advertise-client-urls "https://127.0.0.1:$PORT" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "demo=http://127.0.0.1:$PEER_PORT" \
    --cert-file "$C/etcd.pem" --key-file "$C/etcd-key.pem" \
    --client-cert-auth --trusted-ca-file "$C/etcd-ca.pem" >"$DEMO_DIR/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$C/etcd-ca.pem" --cert "$C/validator.pem" \
        --key "$C/validator-key.pem" "https://127.0.0.1:$PORT/" || true)
    [[ $code == 404 ]] && break
    sleep 0.2
done
echo "curl with the validator's client cert: HTTP $code (404 = TLS set up right)"
if curl -s -o /dev/null --cacert "$C/etcd-ca.pem" "https://127.0.0.1:$PORT/" 2>/dev/null; then
    echo "curl without a client cert: answered (unexpected)"
else
    echo "curl without a client cert: refused, as it should be"
fi

ETCD_FLAGS=(--tower-storage etcd --etcd-endpoint "127.0.0.1:$PORT" --etcd-cacert-file "$C/etcd-ca.pem"
    --etcd-cert-file "$C/validator.pem" --etcd-key-file "$C/validator-key.pem")
VOTES="$DEMO_DIR/votes.log"

step "primary votes as $ID, its tower stored in etcd before every vote"
$BIN/tower-vote-loop --name primary --identity "$DEMO_DIR/validator-keypair.json" \
    --votes-log "$VOTES" "${ETCD_FLAGS[@]}" &
primary=$!
pids+=($primary)
sleep 4

step "failover: the secondary takes the identity (acquires the lock, loads the tower)"
$BIN/tower-vote-loop --name secondary --identity "$DEMO_DIR/validator-keypair.json" \
    --votes-log "$VOTES" --max-votes 8 "${ETCD_FLAGS[@]}" &
pids+=($!)
set +e
wait $primary
echo "primary exited with code $? (3 = lost the tower lock)"
wait "${pids[-1]}"
set -e

step "the stored tower and the lock history (huione-tower)"
$BIN/huione-tower show --identity "$ID" "${ETCD_FLAGS[@]}"
$BIN/huione-tower history --identity "$ID" "${ETCD_FLAGS[@]}"

step "audit: slots voted more than once"
dups=$(cut -d' ' -f1 "$VOTES" | sort | uniq -d | wc -l)
echo "$(wc -l <"$VOTES") votes sent, $dups slot(s) voted twice"
[[ $dups == 0 ]]
