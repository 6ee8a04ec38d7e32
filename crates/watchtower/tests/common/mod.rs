//! Test harness: real huione-validator processes on loopback, in a temp dir.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use huione_core::{Genesis, GenesisValidator};
use huione_keys::Keypair;
use serde_json::{json, Value};

/// The `huione-validator` binary: `$HUIONE_VALIDATOR_BIN`, else built (once per test
/// process) with the cargo that runs the tests, so it is never stale.
pub fn validator_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HUIONE_VALIDATOR_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "huione-validator",
                "--bin",
                "huione-validator",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build -p huione-validator failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let exe = std::env::current_exe().expect("current exe");
        // The test binary lives in target/<profile>/deps/.
        exe.parent()
            .and_then(Path::parent)
            .map(|d| d.join("huione-validator"))
            .expect("target dir")
    })
    .clone()
}

pub fn free_port() -> u16 {
    // UDP and TCP share the number; check both are free.
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Node {
    pub name: String,
    pub identity_file: PathBuf,
    pub ledger: PathBuf,
    pub gossip_port: u16,
    pub rpc_port: u16,
    pub args: Vec<String>,
    pub child: Option<Child>,
}

impl Node {
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ledger.with_extension("log"))
            .unwrap();
        let child = Command::new(validator_bin())
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
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
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

/// One JSON-RPC call over HTTP/1.1 on 127.0.0.1.
pub fn rpc(port: u16, method: &str, params: Value) -> Option<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let req = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let body = resp.split("\r\n\r\n").nth(1)?;
    serde_json::from_str(body).ok()
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub genesis: Genesis,
    pub genesis_file: PathBuf,
    pub nodes: Vec<Node>,
    pub keys: Vec<(Keypair, Keypair)>,
}

impl Cluster {
    /// `n` staked validators with file tower storage; node 0 is the entrypoint.
    pub fn new(n: usize, slot_ms: u64) -> Cluster {
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
        }
    }

    pub fn start_all(&mut self) {
        for n in &mut self.nodes {
            n.start();
        }
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("---- {} ----\n{}", n.name, tail(&n.log(), 40)))
            .collect()
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

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
