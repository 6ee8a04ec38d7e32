//! Cluster tooling: genesis creation and the pieces of `huione-local-cluster` that need no
//! processes — its configuration and validation, the node plan and each node's command
//! line, the `cluster.json` manifest, port picking and status lines (nodes are called
//! through `huione_rpc::client`). The binaries in `src/bin` are thin drivers around these.
//!
//! ```no_run
//! use huione_cluster::genesis::{build_genesis, parse_validator_spec, write_genesis, GenesisParams};
//! let v = parse_validator_spec("validator-keypair.json:vote-account-keypair.json:1000")?;
//! let genesis = build_genesis(vec![v], &GenesisParams::starting_in(3_000))?;
//! write_genesis(std::path::Path::new("genesis.json"), &genesis, false)?;
//! # Ok::<(), huione_cluster::genesis::GenesisToolError>(())
//! ```

pub mod config;
pub mod etcd;
pub mod genesis;
pub mod manifest;
pub mod plan;
pub mod ports;
pub mod status;
