//! `huione-validator`: the validator process and the subcommands that operate it.
//!
//! Without a subcommand it runs the node (`node.rs`): a thin async driver around
//! `huione-core`, wiring it to tower storage, the network, the ledger directory, JSON-RPC
//! and the admin socket. With a subcommand (`set-identity`, `exit`, `monitor`, ...) it
//! talks to a running node over `<ledger>/admin.rpc`.

mod admin;
mod admin_cmds;
mod args;
mod config;
mod node;
mod snapshot;
mod storage_watch;
mod visibility;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes, so supervisors and tests can tell why the node stopped.
pub mod exit_code {
    /// Configuration or start-up error.
    pub const ERROR: u8 = 1;
    /// Another instance took the tower lock for our identity.
    pub const LOCK_LOST: u8 = 3;
    /// A newer instance of our identity runs elsewhere (seen in gossip).
    pub const DUPLICATE_INSTANCE: u8 = 4;
    /// Tower storage failed for longer than --tower-outage-exit-after-ms.
    pub const STORAGE_OUTAGE: u8 = 5;
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    if cli.command.is_some() {
        huione_cli::init_logging_quiet();
    } else {
        huione_cli::init_logging();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::ERROR);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Some(cmd) => admin_cmds::run(&cli.ledger, cmd).await.map(|()| 0),
            None => node::run(cli.ledger, cli.run).await,
        }
    });
    // Do not wait for background tasks (a stuck etcd call) to finish.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", huione_os::process::error_text(e.as_ref()));
            ExitCode::from(exit_code::ERROR)
        }
    }
}
