//! `huione-keygen`: create keypair files and print their pubkeys (solana-keygen format).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use huione_keys::Keypair;

#[derive(Parser)]
#[command(
    name = "huione-keygen",
    version,
    about = "Create and inspect huione keypair files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a new keypair file (JSON array of 64 bytes, mode 0600).
    New {
        /// Where to write the keypair.
        #[arg(short = 'o', long = "outfile", value_name = "FILE")]
        outfile: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// Print only the pubkey.
        #[arg(long, short = 's')]
        silent: bool,
    },
    /// Print the base58 pubkey of a keypair file.
    Pubkey {
        #[arg(value_name = "KEYPAIR")]
        keypair: PathBuf,
    },
}

fn main() -> ExitCode {
    huione_os::process::restore_default_sigpipe();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), huione_keys::KeyError> {
    match cli.command {
        Command::New {
            outfile,
            force,
            silent,
        } => {
            let kp = Keypair::generate()?;
            kp.write_file(&outfile, force)?;
            if silent {
                println!("{}", kp.pubkey());
            } else {
                println!("Wrote new keypair to {}", outfile.display());
                println!("pubkey: {}", kp.pubkey());
            }
        }
        Command::Pubkey { keypair } => {
            println!("{}", Keypair::read_file(&keypair)?.pubkey());
        }
    }
    Ok(())
}
