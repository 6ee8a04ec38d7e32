//! `huione-local-cluster`: a whole huione cluster on this machine — keypairs, genesis,
//! optionally etcd over mutual TLS and a primary/secondary failover pair — with progress
//! while it starts, a status line per second while it runs, and a clean stop (SIGTERM,
//! then SIGKILL after a timeout; etcd last) on Ctrl-C or SIGTERM.

mod driver;
mod signals;

use clap::Parser;
use huione_cluster::config::{BinSearch, LocalClusterArgs};

fn main() {
    let args = LocalClusterArgs::parse();
    let config = match args.resolve(&BinSearch::from_env()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("huione-local-cluster: error: {e}");
            std::process::exit(2);
        }
    };
    signals::install();
    if let Err(e) = driver::run(&config) {
        eprintln!(
            "huione-local-cluster: error: {}",
            huione_os::process::error_text(e.as_ref())
        );
        std::process::exit(1);
    }
}
