//! Subcommands that talk to a running validator over its admin socket.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use huione_keys::Keypair;
use huione_rpc::{AdminClient, RestartVerdict};

use crate::args::{AuthorizedVoterAction, Command, WaitArgs};

pub async fn run(ledger: &Path, command: Command) -> anyhow::Result<()> {
    let mut client = AdminClient::connect(ledger).await?;
    match command {
        Command::Exit => {
            client.exit().await?;
            println!("the validator is exiting");
        }
        Command::ContactInfo => {
            let info = client.contact_info().await?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        Command::Monitor { count } => monitor(&mut client, count).await?,
        Command::WaitForRestartWindow(args) => wait_for_restart_window(&mut client, &args).await?,
        Command::AuthorizedVoter { action } => match action {
            AuthorizedVoterAction::Add { keypair } => {
                let kp = read_keypair(keypair.as_deref())?;
                client.authorized_voter_add(&kp).await?;
                println!("added authorized voter {}", kp.pubkey());
            }
            AuthorizedVoterAction::RemoveAll => {
                client.authorized_voter_remove_all().await?;
                println!("removed all authorized voters");
            }
        },
        Command::SetIdentity {
            keypair,
            require_tower,
        } => {
            let kp = read_keypair(keypair.as_deref())?;
            let out = client.set_identity(&kp, require_tower).await?;
            println!(
                "identity is now {} (was {}); tower {}; lock revision {}",
                out.identity,
                out.previous_identity,
                if out.tower_loaded {
                    format!("loaded, root {:?}", out.tower_root)
                } else {
                    "not stored yet, starting empty".into()
                },
                out.lock_revision.map_or("-".into(), |r| r.to_string()),
            );
        }
    }
    Ok(())
}

fn read_keypair(path: Option<&Path>) -> anyhow::Result<Keypair> {
    match path {
        Some(p) => Ok(Keypair::read_file(p)?),
        None => {
            let mut text = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut text)
                .context("cannot read a keypair from stdin")?;
            Ok(Keypair::from_json(&text, &PathBuf::from("<stdin>"))?)
        }
    }
}

async fn monitor(client: &mut AdminClient, count: Option<u64>) -> anyhow::Result<()> {
    let mut n = 0;
    loop {
        let s = client.status().await?;
        println!(
            "identity {}  role {:?}  slot {}  confirmed {}  last vote {}  root {}  withheld {}  storage {}  lock {:?} rev {}{}",
            s.identity,
            s.role,
            s.slot,
            s.confirmed_slot,
            s.last_vote.map_or("-".into(), |v| v.to_string()),
            s.root.map_or("-".into(), |v| v.to_string()),
            s.votes_withheld,
            s.tower_storage,
            s.lock.state,
            s.lock.revision.map_or("-".into(), |r| r.to_string()),
            s.vote_wait
                .as_deref()
                .map_or(String::new(), |w| format!("  not voting: {w}")),
        );
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn wait_for_restart_window(client: &mut AdminClient, args: &WaitArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let identity = args
        .identity
        .as_deref()
        .map(huione_cli::parse_identity)
        .transpose()?;
    loop {
        let info = client.restart_window(identity).await?;
        match info.verdict(args.min_idle_time * 1000, args.max_delinquent_stake) {
            RestartVerdict::Ready => {
                println!("ready: no leader slot in the next {} s", args.min_idle_time);
                return Ok(());
            }
            RestartVerdict::Wait(why) => println!("waiting: {why}"),
        }
        if args.timeout > 0 && start.elapsed() > Duration::from_secs(args.timeout) {
            bail!("no restart window within {} s", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}
