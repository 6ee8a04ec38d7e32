//! Test support: real etcd servers and clusters over mutual TLS in temp dirs (the
//! launcher lives in `huione_cluster::etcd`, which `huione-local-cluster` runs; it is
//! re-exported here for the tests), network namespaces joined by veth pairs (`netns`), and
//! with the feature `nodes`, the module `nodes`: real `huione-validator` processes on
//! loopback (a staked cluster in a temp dir, process control, JSON-RPC) for real-process
//! tests.
//!
//! Only ever a dev-dependency of the shipped crates.

pub mod netns;
#[cfg(feature = "nodes")]
pub mod nodes;

pub use huione_cluster::etcd::*;
/// A 127.0.0.1 port free for both UDP and TCP a moment ago, outside the ephemeral range:
/// see [`huione_cluster::ports::free_port`].
pub use huione_cluster::ports::free_port;
