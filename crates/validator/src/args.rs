//! Command-line flags, parsed into plain data. Resolution into keys, storage and sockets
//! happens in `config.rs`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use huione_cli::StorageArgs;

#[derive(Parser, Debug)]
#[command(
    name = "huione-validator",
    version,
    about = "The huione validator, with fenced tower storage for safe hot-standby failover"
)]
pub struct Cli {
    /// The ledger directory (blocks, genesis, admin socket `admin.rpc`).
    #[arg(long, global = true, default_value = "ledger")]
    pub ledger: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of the validator process itself.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// This node's identity keypair.
    #[arg(long, value_name = "KEYPAIR")]
    pub identity: Option<PathBuf>,
    /// The vote account this node votes for: a pubkey or keypair file.
    #[arg(long, value_name = "PUBKEY_OR_KEYPAIR")]
    pub vote_account: Option<String>,
    /// A keypair allowed to sign votes (repeatable). Defaults to the identity.
    #[arg(long = "authorized-voter", value_name = "KEYPAIR")]
    pub authorized_voters: Vec<PathBuf>,
    /// Do not require the vote account to name this identity (for a hot standby).
    #[arg(long)]
    pub no_check_vote_account: bool,
    /// The cluster's genesis file (copied into the ledger on first start).
    #[arg(long, value_name = "FILE")]
    pub genesis: Option<PathBuf>,
    /// A node to learn the cluster from (repeatable).
    #[arg(long = "entrypoint", value_name = "HOST:PORT")]
    pub entrypoints: Vec<String>,
    /// UDP port for gossip, blocks, votes and repair.
    #[arg(long, default_value_t = 8001)]
    pub gossip_port: u16,
    /// TCP port for JSON-RPC (and /metrics).
    #[arg(long, default_value_t = 8899)]
    pub rpc_port: u16,
    /// Local address of the UDP gossip socket (gossip, blocks, votes, repair). 0.0.0.0 =
    /// every interface; the address peers use is then --gossip-host, or learned from the
    /// entrypoint.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub bind_address: IpAddr,
    /// Local address of JSON-RPC and /metrics [default: --bind-address]. 127.0.0.1 keeps
    /// them private to this machine while gossip is public.
    #[arg(long, value_name = "IP")]
    pub rpc_bind_address: Option<IpAddr>,
    /// The address other nodes reach this one at, advertised in gossip [default: the
    /// --bind-address if it is a concrete address, else the address the entrypoint sees
    /// this node at; 127.0.0.1 without entrypoints].
    #[arg(long, value_name = "HOST")]
    pub gossip_host: Option<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Exit if the tower could not be stored for this long (0 = never; votes are withheld
    /// meanwhile).
    #[arg(long, default_value_t = 0)]
    pub tower_outage_exit_after_ms: u64,
    /// Take the identity's lock at start even if another instance holds it and this node
    /// has not caught up (the old implementation's behaviour).
    #[arg(long)]
    pub reclaim_immediately: bool,
    /// Do not lead (and do not claim leader slots) while this node's clock is estimated
    /// further than this from the cluster's, measured from other leaders' blocks. Default:
    /// one slot. Safety does not depend on it (the next holder of the identity starts
    /// above the leader claim stored in the tower); it keeps a node with a broken clock
    /// from producing blocks that peers drop.
    #[arg(long, value_name = "MS")]
    pub max_clock_offset_ms: Option<u64>,
    /// A restarted primary reclaims its identity from the standby only while it sees
    /// nodes holding at least this share of the stake (itself included) in gossip, and
    /// has caught up with them; isolated, it stays a follower. 0 = catching up only.
    #[arg(long, default_value_t = 66.67, value_name = "PERCENT")]
    pub reclaim_min_visible_stake: f64,
    /// Blocks kept on disk below the newest root, in slots (older block segments are
    /// deleted; never those a kept snapshot still needs). Default: about 11 hours at
    /// 400 ms slots.
    #[arg(long, value_name = "SLOTS", default_value_t = huione_validator::ledger::DEFAULT_LIMIT_LEDGER_SLOTS)]
    pub limit_ledger_slots: u64,
    /// Write a snapshot of the rooted state each time the root advances this many slots;
    /// a restart replays only the blocks after the newest snapshot.
    #[arg(long, value_name = "SLOTS", default_value_t = huione_validator::ledger::DEFAULT_SNAPSHOT_INTERVAL_SLOTS)]
    pub snapshot_interval_slots: u64,
    /// When the ledger is empty (a new machine), start from the rooted state of this peer
    /// (its JSON-RPC address) instead of replaying from genesis; then catch up by repair.
    /// Name a node you trust (e.g. your own primary): its state is taken as is.
    #[arg(long, value_name = "HOST:PORT")]
    pub snapshot_from: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Ask the running validator to exit.
    Exit,
    /// Print the running validator's contact information.
    ContactInfo,
    /// Live view of the running validator: identity, slot, votes, role, tower lock.
    Monitor {
        /// Stop after this many updates (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Wait until restarting or failing over would not cost a leader slot.
    WaitForRestartWindow(WaitArgs),
    /// Change the keys allowed to sign votes.
    AuthorizedVoter {
        #[command(subcommand)]
        action: AuthorizedVoterAction,
    },
    /// Switch the running validator to another identity: take its tower lock, load its
    /// tower, vote as it. Reads the keypair from stdin when no file is given.
    SetIdentity {
        #[arg(value_name = "KEYPAIR")]
        keypair: Option<PathBuf>,
        /// Fail unless a tower for the identity is stored.
        #[arg(long)]
        require_tower: bool,
    },
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Also require that this identity (pubkey or keypair file) has no leader slot soon.
    #[arg(long)]
    pub identity: Option<String>,
    /// Time without leader slots needed, in seconds.
    #[arg(long, default_value_t = 4)]
    pub min_idle_time: u64,
    /// Maximum delinquent stake, in percent.
    #[arg(long, default_value_t = 5.0)]
    pub max_delinquent_stake: f64,
    /// Give up after this many seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
}

#[derive(Subcommand, Debug)]
pub enum AuthorizedVoterAction {
    /// Add an authorized voter keypair (stdin when no file is given).
    Add {
        #[arg(value_name = "KEYPAIR")]
        keypair: Option<PathBuf>,
    },
    /// Remove every authorized voter except the identity.
    RemoveAll,
}
