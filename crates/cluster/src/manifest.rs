//! `cluster.json`: what a running local cluster is made of, for people and for tests and
//! tools that drive it (failover tests read the primary's admin socket, the secondary's
//! command line, the etcd endpoints and certificate paths from here).
//!
//! Every path is absolute. The launcher writes it (atomically) once all nodes are spawned
//! (`state: "starting"`), again when they all answer RPC (`"running"`) and when it has
//! stopped them (`"stopped"`).

use std::path::{Path, PathBuf};

use huione_keys::Pubkey;
use serde::{Deserialize, Serialize};

use crate::plan::{EtcdFlags, NodePlan, Role};

/// File name of the manifest in the cluster dir.
pub const MANIFEST_FILE: &str = "cluster.json";
/// Version of the schema below; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest manifest we read.
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Where the cluster is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Every node was spawned; not all answer RPC yet.
    Starting,
    /// Every node answered RPC.
    Running,
    /// The launcher stopped every node (and etcd).
    Stopped,
}

/// The whole manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterManifest {
    pub format_version: u32,
    pub state: ClusterState,
    /// The launcher: send it SIGTERM (or SIGINT) to stop the whole cluster.
    pub launcher_pid: u32,
    pub dir: PathBuf,
    pub genesis: PathBuf,
    pub genesis_hash: String,
    pub slot_ms: u64,
    pub slots_per_epoch: u64,
    /// Unix time (ms) of the start of slot 0.
    pub start_time_ms: u64,
    /// Node 0's gossip address, given to every other node as `--entrypoint`.
    pub entrypoint: String,
    pub validator_bin: PathBuf,
    pub nodes: Vec<NodeEntry>,
    /// Present when the cluster runs etcd.
    pub etcd: Option<EtcdEntry>,
}

/// One validator process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub name: String,
    pub role: Role,
    /// The node's identity pubkey (the secondary's own until it runs set-identity).
    pub identity: Pubkey,
    pub identity_keypair: PathBuf,
    /// The vote account it votes for (the secondary: the primary's).
    pub vote_account: Pubkey,
    /// Staked nodes only.
    pub vote_account_keypair: Option<PathBuf>,
    /// The secondary's `--authorized-voter`: the primary's identity keypair (pass it to
    /// `huione-validator set-identity` for a failover).
    pub authorized_voter_keypair: Option<PathBuf>,
    pub stake: u64,
    /// `http://127.0.0.1:PORT`.
    pub rpc_url: String,
    pub rpc_port: u16,
    /// `127.0.0.1:PORT` (UDP).
    pub gossip: String,
    pub gossip_port: u16,
    /// `<ledger>/admin.rpc`.
    pub admin_socket: PathBuf,
    pub ledger: PathBuf,
    /// `"file"` or `"etcd"`.
    pub tower_storage: String,
    pub log: PathBuf,
    /// The process the launcher started (`None` before it is spawned).
    pub pid: Option<u32>,
    /// The full command line (program first), to restart the node by hand.
    pub command: Vec<String>,
}

/// The etcd cluster the launcher started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdEntry {
    pub members: usize,
    /// Client endpoints and the TLS files a validator uses (`--etcd-*` flags).
    #[serde(flatten)]
    pub flags: EtcdFlags,
    pub certs_dir: PathBuf,
    /// Member data dirs and logs live here.
    pub data_dir: PathBuf,
    pub logs: Vec<PathBuf>,
    pub pids: Vec<Option<u32>>,
}

impl NodeEntry {
    /// The entry for a planned node (pid unset).
    pub fn new(
        plan: &NodePlan,
        identity: Pubkey,
        vote_account: Pubkey,
        stake: u64,
        command: Vec<String>,
    ) -> Self {
        NodeEntry {
            name: plan.name.clone(),
            role: plan.role,
            identity,
            identity_keypair: plan.identity_keypair.clone(),
            vote_account,
            vote_account_keypair: plan.vote_account_keypair.clone(),
            authorized_voter_keypair: plan.authorized_voter_keypair.clone(),
            stake,
            rpc_url: plan.rpc_url(),
            rpc_port: plan.ports.rpc,
            gossip: plan.gossip_addr().to_string(),
            gossip_port: plan.ports.gossip,
            admin_socket: plan.admin_socket.clone(),
            ledger: plan.ledger.clone(),
            tower_storage: if plan.role.uses_etcd() {
                "etcd"
            } else {
                "file"
            }
            .to_string(),
            log: plan.log.clone(),
            pid: None,
            command,
        }
    }
}

/// Why a manifest could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source} (is a huione-local-cluster running in that dir?)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a huione-local-cluster manifest: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

impl ClusterManifest {
    /// `DIR/cluster.json`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    /// Writes `DIR/cluster.json` atomically.
    pub fn write(&self) -> Result<PathBuf, ManifestError> {
        let path = Self::path_in(&self.dir);
        let mut json = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        json.push(b'\n');
        huione_os::fs::write_atomic(&path, &json).map_err(|source| ManifestError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Reads a manifest (`path` is the file, or a cluster dir holding cluster.json).
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let path = if path.is_dir() {
            Self::path_in(path)
        } else {
            path.to_path_buf()
        };
        let read_err = |source| ManifestError::Read {
            path: path.clone(),
            source,
        };
        let malformed = |reason: String| ManifestError::Malformed {
            path: path.clone(),
            reason,
        };
        let len = std::fs::metadata(&path).map_err(read_err)?.len();
        if len > MAX_MANIFEST_BYTES {
            return Err(malformed(format!("{len} bytes is far too large")));
        }
        let bytes = std::fs::read(&path).map_err(read_err)?;
        let m: ClusterManifest =
            serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        if m.format_version != FORMAT_VERSION {
            return Err(malformed(format!(
                "format_version {} (this build reads {FORMAT_VERSION})",
                m.format_version
            )));
        }
        Ok(m)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The first node with `role`.
    pub fn by_role(&self, role: Role) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.role == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{node_names, plan_nodes};

    #[test]
    fn write_read_round_trip_with_stable_field_names() {
        let dir = tempfile::tempdir().unwrap();
        let plans = plan_nodes(dir.path(), &node_names(1, true, true), &[20000, 20010]);
        let nodes = plans
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut e = NodeEntry::new(
                    p,
                    Pubkey::from_seed_byte(i as u8 + 1),
                    Pubkey::from_seed_byte(50),
                    if p.staked() { 10 } else { 0 },
                    vec!["huione-validator".into()],
                );
                e.pid = Some(100 + i as u32);
                e
            })
            .collect();
        let m = ClusterManifest {
            format_version: FORMAT_VERSION,
            state: ClusterState::Running,
            launcher_pid: 42,
            dir: dir.path().to_path_buf(),
            genesis: dir.path().join("genesis.json"),
            genesis_hash: "ab".into(),
            slot_ms: 400,
            slots_per_epoch: 432,
            start_time_ms: 5,
            entrypoint: "127.0.0.1:20000".into(),
            validator_bin: "/bin/huione-validator".into(),
            nodes,
            etcd: Some(EtcdEntry {
                members: 1,
                flags: EtcdFlags {
                    endpoints: vec!["127.0.0.1:2379".into()],
                    cacert_file: "/c/etcd-ca.pem".into(),
                    cert_file: "/c/validator.pem".into(),
                    key_file: "/c/validator-key.pem".into(),
                    domain_name: "localhost".into(),
                },
                certs_dir: "/c".into(),
                data_dir: "/d".into(),
                logs: vec!["/d/m0.log".into()],
                pids: vec![Some(7)],
            }),
        };
        let path = m.write().unwrap();
        assert_eq!(path, dir.path().join("cluster.json"));
        assert_eq!(ClusterManifest::read(dir.path()).unwrap(), m);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["state"], "running");
        assert_eq!(v["nodes"][1]["role"], "secondary");
        assert_eq!(v["nodes"][1]["tower_storage"], "etcd");
        assert_eq!(v["nodes"][0]["rpc_url"], "http://127.0.0.1:20009");
        assert_eq!(
            v["nodes"][0]["identity"],
            Pubkey::from_seed_byte(1).to_string()
        );
        assert_eq!(v["etcd"]["endpoints"][0], "127.0.0.1:2379");
        assert_eq!(v["etcd"]["cacert_file"], "/c/etcd-ca.pem");
        assert_eq!(m.by_role(Role::Primary).unwrap().name, "primary");
        assert!(m
            .node("secondary")
            .unwrap()
            .authorized_voter_keypair
            .is_some());
    }
}
