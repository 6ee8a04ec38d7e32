//! Real `huione-validator` processes on loopback, in a temp dir: the harness of the
//! validator's and the watchtower's real-process tests (feature `nodes`).
//!
//! The validator binary is a parameter ([`Cluster::new`], [`Node::bin`]): the validator's
//! own tests pass `env!("CARGO_BIN_EXE_huione-validator")`, other crates build or find it.
//! A node's stderr (at `RUST_LOG=info`) is appended to `<ledger>.log`; dropping a [`Node`]
//! SIGKILLs its process.
//!
//! ```no_run
//! use huione_testkit::nodes::{wait_for, Cluster};
//! use std::time::Duration;
//!
//! let mut c = Cluster::new("target/debug/huione-validator", 3, 100);
//! c.start_all();
//! let rooted = wait_for(Duration::from_secs(30), || c.nodes[0].slot("finalized"));
//! assert!(rooted.is_some(), "{}", c.logs());
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use huione_core::{Genesis, GenesisValidator};
use huione_keys::Keypair;
use huione_rpc::client::{blocking::RpcClient, Endpoint};
use serde_json::{json, Value};

pub use crate::free_port;

/// One validator process: its command line and, once started, the child.
pub struct Node {
    pub name: String,
    pub identity_file: PathBuf,
    pub ledger: PathBuf,
    pub gossip_port: u16,
    pub rpc_port: u16,
    pub args: Vec<String>,
    pub child: Option<Child>,
    /// The binary [`Node::start`] runs.
    pub bin: PathBuf,
}

impl Node {
    /// Spawns `bin args` with `RUST_LOG=info`, stderr appended to `<ledger>.log`.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ledger.with_extension("log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
    /// SIGKILLs the process (if running) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            crate::process::signal(c.id(), sig);
        }
    }
    /// Waits for the process to exit and returns its code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return st.code();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
    pub fn rpc(&self, method: &str, params: Value) -> Option<Value> {
        rpc(self.rpc_port, method, params)
    }
    /// Everything the node's runs have logged ("" if nothing yet).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.ledger.with_extension("log")).unwrap_or_default()
    }
    pub fn slot(&self, commitment: &str) -> Option<u64> {
        self.rpc("getSlot", json!([{ "commitment": commitment }]))?
            .get("result")?
            .as_u64()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// How long a test's call to a node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// One JSON-RPC call to 127.0.0.1:`port` (`huione_rpc::client`); the whole reply object
/// (`result` or `error`), `None` if there was no JSON-RPC answer.
pub fn rpc(port: u16, method: &str, params: Value) -> Option<Value> {
    client(port).call_raw(method, params).ok()
}

/// `GET path` on 127.0.0.1:`port` (`/metrics`, Prometheus's API, ...); the body of a 200
/// answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    client(port).get_text(path).ok()
}

fn client(port: u16) -> RpcClient {
    RpcClient::new(Endpoint::local(port)).with_timeout(CALL_TIMEOUT)
}

/// `n` staked validators sharing a genesis in a temp dir (removed on drop).
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub genesis: Genesis,
    pub genesis_file: PathBuf,
    pub nodes: Vec<Node>,
    /// (identity, vote account) of each validator in the genesis.
    pub keys: Vec<(Keypair, Keypair)>,
    /// The `huione-validator` binary every node runs.
    pub bin: PathBuf,
}

impl Cluster {
    /// `n` staked validators with file tower storage, run from `validator_bin`; node 0 is
    /// the entrypoint. The genesis starts 1.5 s from now; nothing is started yet.
    pub fn new(validator_bin: impl Into<PathBuf>, n: usize, slot_ms: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<(Keypair, Keypair)> = (0..n)
            .map(|_| (Keypair::generate().unwrap(), Keypair::generate().unwrap()))
            .collect();
        let validators = keys
            .iter()
            .map(|(id, vote)| GenesisValidator {
                identity: id.pubkey(),
                vote_account: vote.pubkey(),
                authorized_voter: id.pubkey(),
                stake: 100,
            })
            .collect();
        let start = now_ms() + 1500;
        let genesis = Genesis::new(validators, slot_ms, 64, start).unwrap();
        let genesis_file = dir.path().join("genesis.json");
        std::fs::write(&genesis_file, serde_json::to_vec(&genesis).unwrap()).unwrap();
        let mut cluster = Cluster {
            dir,
            genesis,
            genesis_file,
            nodes: Vec::new(),
            keys,
            bin: validator_bin.into(),
        };
        let mut entry = None;
        for i in 0..n {
            let node = cluster.node_spec(&format!("v{i}"), i, entry, &[]);
            entry.get_or_insert(node.gossip_port);
            cluster.nodes.push(node);
        }
        cluster
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A node that runs validator `i`'s vote account, with its own identity file written.
    /// A hot standby for validator `i`, whose primary is `self.nodes[i]`: a new identity of
    /// its own (`<dir>/<name>-validator-keypair.json`, also its `identity_file`), validator
    /// `i`'s vote account, node 0 as entrypoint, `extra`, then `--no-check-vote-account`
    /// and, with `authorized_voter`, `--authorized-voter <the primary's identity file>` so
    /// it can vote as the primary after `set-identity`. Nothing is started.
    pub fn standby_spec(
        &self,
        name: &str,
        i: usize,
        extra: &[String],
        authorized_voter: bool,
    ) -> Node {
        let file = self
            .dir
            .path()
            .join(format!("{name}-validator-keypair.json"));
        Keypair::generate()
            .unwrap()
            .write_file(&file, false)
            .unwrap();
        let mut flags = extra.to_vec();
        flags.push("--no-check-vote-account".into());
        if authorized_voter {
            flags.push("--authorized-voter".into());
            flags.push(self.nodes[i].identity_file.display().to_string());
        }
        let mut node = self.node_spec(name, i, Some(self.nodes[0].gossip_port), &flags);
        let pos = node.args.iter().position(|a| a == "--identity").unwrap();
        node.args[pos + 1] = file.display().to_string();
        node.identity_file = file;
        node
    }

    pub fn node_spec(&self, name: &str, i: usize, entry: Option<u16>, extra: &[String]) -> Node {
        let (id, vote) = &self.keys[i];
        let id_file = self.dir.path().join(format!("{name}-identity.json"));
        if !id_file.exists() {
            id.write_file(&id_file, false).unwrap();
        }
        let ledger = self.dir.path().join(name);
        let (gossip_port, rpc_port) = (free_port(), free_port());
        let mut args: Vec<String> = vec![
            "--identity".into(),
            id_file.display().to_string(),
            "--vote-account".into(),
            vote.pubkey().to_string(),
            "--ledger".into(),
            ledger.display().to_string(),
            "--genesis".into(),
            self.genesis_file.display().to_string(),
            "--gossip-port".into(),
            gossip_port.to_string(),
            "--rpc-port".into(),
            rpc_port.to_string(),
            "--tower".into(),
            ledger.display().to_string(),
            // Loopback only (the validator's default is every interface).
            "--bind-address".into(),
            "127.0.0.1".into(),
        ];
        if let Some(e) = entry {
            args.push("--entrypoint".into());
            args.push(format!("127.0.0.1:{e}"));
        }
        args.extend(extra.iter().cloned());
        Node {
            name: name.into(),
            identity_file: id_file,
            ledger,
            gossip_port,
            rpc_port,
            args,
            child: None,
            bin: self.bin.clone(),
        }
    }

    pub fn start_all(&mut self) {
        for n in &mut self.nodes {
            n.start();
        }
    }

    /// The last 40 log lines of every node, under a `---- name ----` header each.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("---- {} ----\n{}", n.name, tail(&n.log(), 40)))
            .collect()
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    crate::process::last_lines(s, n)
}

/// Milliseconds since the Unix epoch (the one clock helper, re-exported for the tests).
pub use huione_os::clock::now_ms;

/// Polls `f` until it returns Some or the timeout passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn cluster_specs_share_the_genesis_and_point_at_node_0() {
        let c = Cluster::new("/nonexistent/huione-validator", 3, 100);
        assert!(c.genesis_file.is_file());
        assert_eq!(c.nodes.len(), 3);
        assert!(c.nodes.iter().all(|n| n.identity_file.is_file()));
        assert!(c.nodes.iter().all(|n| n.bin == c.bin && n.child.is_none()));
        let entry = format!("127.0.0.1:{}", c.nodes[0].gossip_port);
        assert!(!c.nodes[0].args.contains(&"--entrypoint".to_string()));
        let entry_args = ["--entrypoint".to_string(), entry];
        assert!(c.nodes[1..].iter().all(|n| n.args.ends_with(&entry_args)));
        let extra = ["--reclaim-immediately".to_string()];
        let n = c.node_spec("primary", 2, Some(1), &extra);
        assert_eq!(n.ledger, c.path().join("primary"));
        assert_eq!(n.args.last(), Some(&extra[0]));
    }

    #[test]
    fn node_runs_its_binary_and_logs_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = Node {
            name: "sh".into(),
            identity_file: dir.path().join("unused"),
            ledger: dir.path().join("sh"),
            gossip_port: 0,
            rpc_port: 0,
            args: vec!["-c".into(), "echo \"level=$RUST_LOG\" >&2; exit 7".into()],
            child: None,
            bin: "/bin/sh".into(),
        };
        n.start();
        assert!(n.pid() > 0);
        assert_eq!(n.wait_exit(Duration::from_secs(10)), Some(7));
        assert!(n.child.is_none());
        assert_eq!(n.log(), "level=info\n");
    }

    #[test]
    fn rpc_posts_json_and_reads_the_result() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.ends_with(b"}") {
                let len = s.read(&mut buf).unwrap();
                assert!(len > 0, "request cut short");
                req.extend_from_slice(&buf[..len]);
            }
            let body = r#"{"jsonrpc":"2.0","id":1,"result":42}"#;
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8(req).unwrap()
        });
        let resp = rpc(port, "getSlot", json!([])).unwrap();
        assert_eq!(resp["result"], 42);
        assert!(server.join().unwrap().contains(r#""method":"getSlot""#));
    }

    #[test]
    fn tail_and_wait_for() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        let mut calls = 0;
        let got = wait_for(Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, Some(3));
        assert_eq!(wait_for(Duration::ZERO, || Some(1)), None);
    }
}
