#!/usr/bin/env python3
"""A stand-in for huione-validator in the launcher's tests: accepts its flags, records
them in <ledger>/fake-args.json, answers getSlot/getHealth/getIdentity on --rpc-port with
slots computed from the genesis, and exits 0 on SIGTERM.

FAKE_VALIDATOR_MODE: "normal" (default), "exit" (exit 3 at once, with a message on
stderr), "ignore-term" (ignore SIGTERM: the launcher must SIGKILL it)."""
import json, os, signal, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

def flag(name, default=None):
    args = sys.argv[1:]
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return default

mode = os.environ.get("FAKE_VALIDATOR_MODE", "normal")
ledger = flag("--ledger")
os.makedirs(ledger, exist_ok=True)
with open(os.path.join(ledger, "fake-args.json"), "w") as f:
    json.dump(sys.argv[1:], f)
if mode == "exit":
    print("fake validator: refusing to start (FAKE_VALIDATOR_MODE=exit)", file=sys.stderr)
    sys.exit(3)
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    def on_term(sig, frame):
        open(os.path.join(ledger, "fake-terminated"), "w").close()
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)

genesis = json.load(open(flag("--genesis")))
identity = flag("--identity")

def slot():
    now_ms = int(time.time() * 1000)
    return max(0, now_ms - genesis["start_time_ms"]) // genesis["slot_duration_ms"]

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        method = req.get("method")
        params = req.get("params") or []
        if method == "getSlot":
            commitment = (params[0] if params else {}).get("commitment", "finalized")
            s = slot()
            result = s if commitment == "processed" else max(0, s - 3)
        elif method == "getHealth":
            result = "ok"
        elif method == "getIdentity":
            result = {"identity": identity}
        else:
            body = {"jsonrpc": "2.0", "id": req.get("id"),
                    "error": {"code": -32601, "message": "Method not found"}}
            return self.reply(body)
        self.reply({"jsonrpc": "2.0", "id": req.get("id"), "result": result})

    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

print("fake validator up, rpc port", flag("--rpc-port"), file=sys.stderr, flush=True)
HTTPServer(("127.0.0.1", int(flag("--rpc-port"))), Handler).serve_forever()
