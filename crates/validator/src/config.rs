//! Resolving the flags into a node configuration: keys, genesis, addresses.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use huione_core::Genesis;
use huione_keys::{Keypair, Pubkey};
use huione_net::addressing::{self, HostPlan};

use crate::args::RunArgs;

/// Everything the node needs, resolved and checked.
pub struct NodeConfig {
    pub ledger: PathBuf,
    pub identity: Keypair,
    pub vote_account: Pubkey,
    pub authorized_voters: Vec<Keypair>,
    pub genesis: Genesis,
    /// Where the gossip socket is bound.
    pub gossip_bind: SocketAddr,
    /// Where JSON-RPC and /metrics are bound.
    pub rpc_bind: SocketAddr,
    /// How the address advertised in gossip is found.
    pub gossip_host: HostPlan,
    pub entrypoints: Vec<SocketAddr>,
    /// True when the identity is the node of the vote account (it votes from the start).
    pub is_vote_account_node: bool,
    pub args: RunArgs,
}

pub fn resolve(ledger: PathBuf, args: RunArgs) -> anyhow::Result<NodeConfig> {
    let identity_path = args
        .identity
        .clone()
        .context("--identity KEYPAIR is required to run a validator")?;
    let identity = Keypair::read_file(&identity_path)?;
    let vote_account = match &args.vote_account {
        Some(v) => huione_cli::parse_identity(v).context("--vote-account")?,
        None => bail!("--vote-account PUBKEY is required to run a validator"),
    };
    let mut authorized_voters = vec![identity.clone()];
    for p in &args.authorized_voters {
        authorized_voters.push(Keypair::read_file(p)?);
    }
    std::fs::create_dir_all(&ledger)
        .with_context(|| format!("cannot create the ledger directory {}", ledger.display()))?;
    let genesis = load_genesis(&ledger, args.genesis.as_deref())?;
    let node = genesis
        .validator_by_vote_account(&vote_account)
        .map(|v| v.identity);
    let Some(node) = node else {
        bail!("vote account {vote_account} is not in this cluster's genesis; check --vote-account");
    };
    let is_vote_account_node = node == identity.pubkey();
    if !is_vote_account_node && !args.no_check_vote_account {
        bail!(
            "vote account {vote_account} belongs to node {node}, not to this identity {}. \
             On a hot standby pass --no-check-vote-account and --authorized-voter with the \
             primary's keypair",
            identity.pubkey()
        );
    }
    let entrypoints = args
        .entrypoints
        .iter()
        .map(|e| resolve_addr(e).with_context(|| format!("--entrypoint {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !(0.0..=100.0).contains(&args.reclaim_min_visible_stake) {
        bail!(
            "--reclaim-min-visible-stake {} must be a percentage from 0 to 100",
            args.reclaim_min_visible_stake
        );
    }
    let gossip_host = args
        .gossip_host
        .as_deref()
        .map(|h| resolve_host(h).with_context(|| format!("--gossip-host {h}")))
        .transpose()?;
    let host_plan = addressing::plan_gossip_host(args.bind_address, gossip_host, &entrypoints)?;
    Ok(NodeConfig {
        ledger,
        gossip_bind: SocketAddr::new(args.bind_address, args.gossip_port),
        rpc_bind: SocketAddr::new(
            args.rpc_bind_address.unwrap_or(args.bind_address),
            args.rpc_port,
        ),
        gossip_host: host_plan,
        identity,
        vote_account,
        authorized_voters,
        genesis,
        entrypoints,
        is_vote_account_node,
        args,
    })
}

/// An IP address, or a host name resolved to its first address.
fn resolve_host(s: &str) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Ok(ip);
    }
    Ok(resolve_addr(&format!("{s}:0"))?.ip())
}

fn resolve_addr(s: &str) -> anyhow::Result<SocketAddr> {
    s.to_socket_addrs()?
        .next()
        .with_context(|| format!("{s} does not resolve to an address"))
}

/// Reads the genesis from `--genesis` (copying it into the ledger) or from the ledger.
fn load_genesis(ledger: &Path, flag: Option<&Path>) -> anyhow::Result<Genesis> {
    let in_ledger = ledger.join("genesis.json");
    let read = |p: &Path| -> anyhow::Result<Genesis> {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the genesis file {}", p.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a huione genesis file", p.display()))
    };
    match flag {
        Some(p) => {
            let g = read(p)?;
            if in_ledger.exists() {
                let existing = read(&in_ledger)?;
                if existing.hash != g.hash {
                    bail!(
                        "the ledger {} belongs to another cluster (genesis {} there, {} in {}); \
                         use a fresh --ledger directory",
                        ledger.display(),
                        existing.hash,
                        g.hash,
                        p.display()
                    );
                }
            } else {
                std::fs::write(&in_ledger, serde_json::to_vec_pretty(&g)?)
                    .with_context(|| format!("cannot write {}", in_ledger.display()))?;
            }
            Ok(g)
        }
        None if in_ledger.exists() => read(&in_ledger),
        None => bail!(
            "no genesis: pass --genesis FILE (made by huione-genesis) or use a ledger that has one"
        ),
    }
}
