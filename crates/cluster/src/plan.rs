//! The cluster's layout: which nodes, their roles, files and ports, and the exact
//! `huione-validator` command line of each. Pure: paths and keys in, plans and argument
//! lists out.
//!
//! Layout of the cluster dir:
//!
//! ```text
//! DIR/cluster.json                  the manifest (see crate::manifest)
//! DIR/genesis.json
//! DIR/certs/                        etcd-ca.pem, etcd.pem, validator.pem, ... (--etcd)
//! DIR/etcd/m<i>.etcd, m<i>.log      etcd member data and logs (--etcd)
//! DIR/<node>/validator-keypair.json identity (secondary: secondary-validator-keypair.json)
//! DIR/<node>/vote-account-keypair.json   (staked nodes)
//! DIR/<node>/ledger/                ledger; admin socket ledger/admin.rpc
//! DIR/<node>/validator.log          the node's stdout and stderr
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use huione_keys::Pubkey;
use serde::{Deserialize, Serialize};

use crate::ports::NodePorts;

/// Identity keypair file of a staked node (the seed's name).
pub const IDENTITY_FILE: &str = "validator-keypair.json";
/// Identity keypair file of the secondary (the seed's name).
pub const SECONDARY_IDENTITY_FILE: &str = "secondary-validator-keypair.json";
/// Vote account keypair file of a staked node.
pub const VOTE_ACCOUNT_FILE: &str = "vote-account-keypair.json";
/// A node's log file.
pub const LOG_FILE: &str = "validator.log";

/// What a node is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A staked validator with its tower in a file.
    Validator,
    /// A staked validator with its tower in etcd (the failover pair's active side).
    Primary,
    /// The primary's hot standby: own identity, no stake, may vote for the primary's vote
    /// account after `set-identity`.
    Secondary,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Validator => "validator",
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }
    /// Keeps its tower in etcd.
    pub fn uses_etcd(self) -> bool {
        matches!(self, Role::Primary | Role::Secondary)
    }
}

/// Node names and roles, in start order: `validator-0 … validator-(n-2)`, then with etcd
/// `primary` as the last staked node (else `validator-(n-1)`), then `secondary` with
/// `failover_pair`. Node 0 is the gossip entrypoint, so it is a plain validator whenever
/// there are two or more: killing the primary in a failover test leaves the entrypoint up.
pub fn node_names(validators: usize, etcd: bool, failover_pair: bool) -> Vec<(String, Role)> {
    let mut nodes: Vec<(String, Role)> = (0..validators)
        .map(|i| (format!("validator-{i}"), Role::Validator))
        .collect();
    if etcd {
        if let Some(last) = nodes.last_mut() {
            *last = ("primary".to_string(), Role::Primary);
        }
    }
    if failover_pair {
        nodes.push(("secondary".to_string(), Role::Secondary));
    }
    nodes
}

/// `DIR/<name>/ledger/admin.rpc`.
pub fn admin_socket_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name).join("ledger").join("admin.rpc")
}

/// One node's files and ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    pub index: usize,
    pub name: String,
    pub role: Role,
    /// `DIR/<name>`.
    pub dir: PathBuf,
    pub identity_keypair: PathBuf,
    /// Staked nodes only: the secondary votes for the primary's account by pubkey.
    pub vote_account_keypair: Option<PathBuf>,
    /// The secondary's `--authorized-voter`: the primary's identity keypair.
    pub authorized_voter_keypair: Option<PathBuf>,
    pub ledger: PathBuf,
    pub admin_socket: PathBuf,
    pub log: PathBuf,
    pub ports: NodePorts,
}

impl NodePlan {
    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.gossip))
    }
    pub fn rpc_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.rpc))
    }
    pub fn rpc_url(&self) -> String {
        format!("http://{}", self.rpc_addr())
    }
    pub fn staked(&self) -> bool {
        self.role != Role::Secondary
    }
}

/// Plans every node of a cluster in `dir`, one port block per node (same order as
/// [`node_names`]).
pub fn plan_nodes(dir: &Path, names: &[(String, Role)], port_blocks: &[u16]) -> Vec<NodePlan> {
    assert_eq!(names.len(), port_blocks.len(), "one port block per node");
    let primary_identity = names
        .iter()
        .find(|(_, r)| *r == Role::Primary)
        .map(|(n, _)| dir.join(n).join(IDENTITY_FILE));
    names
        .iter()
        .zip(port_blocks)
        .enumerate()
        .map(|(index, ((name, role), &block))| {
            let node_dir = dir.join(name);
            let secondary = *role == Role::Secondary;
            NodePlan {
                index,
                name: name.clone(),
                role: *role,
                identity_keypair: node_dir.join(if secondary {
                    SECONDARY_IDENTITY_FILE
                } else {
                    IDENTITY_FILE
                }),
                vote_account_keypair: (!secondary).then(|| node_dir.join(VOTE_ACCOUNT_FILE)),
                authorized_voter_keypair: if secondary {
                    primary_identity.clone()
                } else {
                    None
                },
                ledger: node_dir.join("ledger"),
                admin_socket: admin_socket_path(dir, name),
                log: node_dir.join(LOG_FILE),
                ports: NodePorts::from_block(block),
                dir: node_dir,
            }
        })
        .collect()
}

/// What a node needs to reach etcd over mutual TLS (the seed's flags).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdFlags {
    /// `127.0.0.1:PORT`, one per member.
    pub endpoints: Vec<String>,
    pub cacert_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub domain_name: String,
}

/// The rest of what a node's command line depends on.
#[derive(Clone, Debug)]
pub struct ArgsContext<'a> {
    pub genesis: &'a Path,
    /// Node 0's gossip address; `None` for node 0 itself.
    pub entrypoint: Option<SocketAddr>,
    /// The vote account the node votes for (the secondary: the primary's).
    pub vote_account: Pubkey,
    pub etcd: Option<&'a EtcdFlags>,
    /// Appended as they are.
    pub extra: &'a [String],
}

/// The `huione-validator` arguments (without the program) for `node`.
pub fn validator_args(node: &NodePlan, cx: &ArgsContext<'_>) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let mut args = vec!["--identity".to_string(), path(&node.identity_keypair)];
    args.push("--vote-account".into());
    args.push(match &node.vote_account_keypair {
        Some(file) => path(file),
        None => cx.vote_account.to_string(),
    });
    if let Some(voter) = &node.authorized_voter_keypair {
        args.extend([
            "--no-check-vote-account".into(),
            "--authorized-voter".into(),
            path(voter),
        ]);
    }
    args.extend([
        "--ledger".into(),
        path(&node.ledger),
        "--genesis".into(),
        path(cx.genesis),
    ]);
    if let Some(entrypoint) = cx.entrypoint {
        args.extend(["--entrypoint".into(), entrypoint.to_string()]);
    }
    args.extend([
        "--bind-address".into(),
        Ipv4Addr::LOCALHOST.to_string(),
        "--gossip-port".into(),
        node.ports.gossip.to_string(),
        "--rpc-port".into(),
        node.ports.rpc.to_string(),
    ]);
    match cx.etcd.filter(|_| node.role.uses_etcd()) {
        Some(etcd) => {
            args.extend(["--tower-storage".into(), "etcd".into()]);
            for e in &etcd.endpoints {
                args.extend(["--etcd-endpoint".into(), e.clone()]);
            }
            args.extend([
                "--etcd-cacert-file".into(),
                path(&etcd.cacert_file),
                "--etcd-cert-file".into(),
                path(&etcd.cert_file),
                "--etcd-key-file".into(),
                path(&etcd.key_file),
                "--etcd-domain-name".into(),
                etcd.domain_name.clone(),
            ]);
        }
        None => args.extend(["--tower-storage".into(), "file".into()]),
    }
    args.extend(cx.extra.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[(String, Role)]) -> Vec<&str> {
        n.iter().map(|(s, _)| s.as_str()).collect()
    }

    #[test]
    fn names_and_roles() {
        assert_eq!(
            names(&node_names(3, false, false)),
            ["validator-0", "validator-1", "validator-2"]
        );
        assert_eq!(
            names(&node_names(3, true, false)),
            ["validator-0", "validator-1", "primary"]
        );
        let pair = node_names(2, true, true);
        assert_eq!(names(&pair), ["validator-0", "primary", "secondary"]);
        assert_eq!(pair[2].1, Role::Secondary);
        assert_eq!(names(&node_names(1, true, true)), ["primary", "secondary"]);
    }

    fn etcd() -> EtcdFlags {
        EtcdFlags {
            endpoints: vec!["127.0.0.1:2379".into(), "127.0.0.1:2479".into()],
            cacert_file: "/c/certs/etcd-ca.pem".into(),
            cert_file: "/c/certs/validator.pem".into(),
            key_file: "/c/certs/validator-key.pem".into(),
            domain_name: "localhost".into(),
        }
    }

    #[test]
    fn command_lines_per_role() {
        let dir = Path::new("/c");
        let plans = plan_nodes(dir, &node_names(2, true, true), &[20000, 20010, 20020]);
        let etcd = etcd();
        let entry: SocketAddr = "127.0.0.1:20000".parse().unwrap();
        let vote = Pubkey::from_seed_byte(9);
        let cx = |entrypoint, extra| ArgsContext {
            genesis: Path::new("/c/genesis.json"),
            entrypoint,
            vote_account: vote,
            etcd: Some(&etcd),
            extra,
        };
        let a0 = validator_args(&plans[0], &cx(None, &[]));
        assert_eq!(
            a0.join(" "),
            "--identity /c/validator-0/validator-keypair.json \
             --vote-account /c/validator-0/vote-account-keypair.json \
             --ledger /c/validator-0/ledger --genesis /c/genesis.json \
             --bind-address 127.0.0.1 --gossip-port 20000 --rpc-port 20009 --tower-storage file"
        );
        let etcd_tail = "--tower-storage etcd --etcd-endpoint 127.0.0.1:2379 \
             --etcd-endpoint 127.0.0.1:2479 --etcd-cacert-file /c/certs/etcd-ca.pem \
             --etcd-cert-file /c/certs/validator.pem --etcd-key-file /c/certs/validator-key.pem \
             --etcd-domain-name localhost";
        let a1 = validator_args(&plans[1], &cx(Some(entry), &[]));
        assert_eq!(
            a1.join(" "),
            format!(
                "--identity /c/primary/validator-keypair.json \
                 --vote-account /c/primary/vote-account-keypair.json \
                 --ledger /c/primary/ledger --genesis /c/genesis.json --entrypoint 127.0.0.1:20000 \
                 --bind-address 127.0.0.1 --gossip-port 20010 --rpc-port 20019 {etcd_tail}"
            )
        );
        let extra = vec!["--x".to_string()];
        let a2 = validator_args(&plans[2], &cx(Some(entry), &extra));
        assert_eq!(
            a2.join(" "),
            format!(
                "--identity /c/secondary/secondary-validator-keypair.json --vote-account {vote} \
                 --no-check-vote-account --authorized-voter /c/primary/validator-keypair.json \
                 --ledger /c/secondary/ledger --genesis /c/genesis.json --entrypoint 127.0.0.1:20000 \
                 --bind-address 127.0.0.1 --gossip-port 20020 --rpc-port 20029 {etcd_tail} --x"
            )
        );
        assert_eq!(
            plans[2].admin_socket,
            Path::new("/c/secondary/ledger/admin.rpc")
        );
        assert_eq!(plans[1].rpc_url(), "http://127.0.0.1:20019");
        assert!(!plans[2].staked() && plans[1].staked());
    }
}
