//! `huione-certs`: makes and shows the etcd mutual-TLS certificates (replaces cfssl in the
//! operator guide). `new` writes etcd-ca.pem, etcd.pem, validator.pem (+ keys, + per-member
//! certs); `show` prints subject, SANs, usages and expiry.

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use huione_certs::{time::OffsetDateTime, CertOptions, CertPaths};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "huione-certs",
    version,
    about = "Create and inspect the certificates for etcd over mutual TLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a CA, the etcd server certificate, the validator client certificate and
    /// optionally one certificate per etcd member.
    New(NewArgs),
    /// Print subject, SANs, usages and expiry of certificates.
    Show(ShowArgs),
    /// New etcd, member and validator certificates from the existing CA in --dir, with the
    /// same hosts and file names, each file replaced atomically. Clients that trust the CA
    /// keep working; validators load the new files on SIGHUP or when the files change.
    Renew(RenewArgs),
}

#[derive(clap::Args, Debug)]
struct RenewArgs {
    /// Directory holding etcd-ca.pem / etcd-ca-key.pem and the certificates to renew.
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// Lifetime of the new certificates, in days.
    #[arg(long, default_value_t = huione_certs::DEFAULT_DAYS,
          value_parser = clap::value_parser!(u32).range(1..))]
    days: u32,
    /// Hosts for the server certificates (default: the SANs of the current etcd.pem).
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct NewArgs {
    /// Directory to write into (created with mode 0700 if missing).
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// Comma-separated DNS names and IP addresses clients use to reach etcd
    /// (they become the server certificates' SANs), e.g. localhost,127.0.0.1,10.0.0.5
    #[arg(long, value_delimiter = ',', required = true)]
    hosts: Vec<String>,
    /// Also write etcd-member-<i>.pem / etcd-member-<i>-key.pem for i in 0..N (for a
    /// multi-node etcd: client-facing and peer TLS).
    #[arg(long, default_value_t = 0)]
    members: usize,
    /// Lifetime of the etcd and validator certificates, in days (the CA lives at least
    /// as long, and at least 3650 days).
    #[arg(long, default_value_t = huione_certs::DEFAULT_DAYS,
          value_parser = clap::value_parser!(u32).range(1..))]
    days: u32,
    /// Overwrite existing files (regenerates everything, including the CA unless
    /// --reuse-ca is given).
    #[arg(long)]
    force: bool,
    /// Sign with the existing etcd-ca.pem / etcd-ca-key.pem in --dir instead of making a
    /// new CA (clients that trust the CA keep working).
    #[arg(long)]
    reuse_ca: bool,
}

#[derive(clap::Args, Debug)]
struct ShowArgs {
    /// Directory whose certificates (*.pem, keys skipped) to show.
    #[arg(long, conflicts_with = "file")]
    dir: Option<PathBuf>,
    /// A certificate file to show (repeatable).
    #[arg(long)]
    file: Vec<PathBuf>,
}

fn main() -> ExitCode {
    huione_os::process::restore_default_sigpipe();
    huione_cli::init_logging();
    let result = match Cli::parse().command {
        Command::New(args) => new(&args),
        Command::Show(args) => show(&args),
        Command::Renew(args) => renew(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", huione_os::process::error_text(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn new(args: &NewArgs) -> anyhow::Result<()> {
    let opts = CertOptions::new(args.hosts.iter().cloned())
        .with_members(args.members)
        .with_days(args.days);
    let certs = if args.reuse_ca {
        let ca = huione_certs::read_ca(&args.dir).context("--reuse-ca")?;
        huione_certs::generate_with_ca(ca, &opts)?
    } else {
        huione_certs::generate(&opts)?
    };
    let paths = huione_certs::write(&args.dir, &certs, args.force)?;
    let hosts = huione_certs::normalize_hosts(&opts.hosts)?;
    println!(
        "{} certificates in {} (valid {} days, SANs: {}):",
        if args.reuse_ca {
            "Signed new"
        } else {
            "Created"
        },
        args.dir.display(),
        args.days,
        hosts.join(", ")
    );
    for file in paths.all_files() {
        println!("  {}", file.display());
    }
    warn_stale_members(&args.dir, args.members);
    print_next_steps(&paths);
    Ok(())
}

/// Member files beyond --members left from an earlier run are signed by whatever CA made
/// them; say so rather than leave a silent mix.
fn warn_stale_members(dir: &Path, members: usize) {
    let stale: Vec<String> = (members..)
        .map(huione_certs::member_cert_file)
        .take_while(|f| dir.join(f).exists())
        .collect();
    if !stale.is_empty() {
        eprintln!(
            "warning: {} in {} are left from an earlier run and were not regenerated; \
             delete them if the CA changed",
            stale.join(", "),
            dir.display()
        );
    }
}

fn print_next_steps(paths: &CertPaths) {
    println!();
    println!("etcd flags (single node):");
    println!(
        "  --cert-file {} --key-file {} --client-cert-auth --trusted-ca-file {}",
        paths.etcd.cert.display(),
        paths.etcd.key.display(),
        paths.ca.cert.display()
    );
    println!("validator flags:");
    println!(
        "  --etcd-cacert-file {} --etcd-cert-file {} --etcd-key-file {}",
        paths.ca.cert.display(),
        paths.validator.cert.display(),
        paths.validator.key.display()
    );
}

fn renew(args: &RenewArgs) -> anyhow::Result<()> {
    let ca = huione_certs::read_ca(&args.dir).context("huione-certs renew needs the CA")?;
    let hosts = if args.hosts.is_empty() {
        let etcd = args.dir.join(huione_certs::ETCD_CERT_FILE);
        let info = huione_certs::inspect(&etcd)
            .with_context(|| format!("cannot read the hosts of {}; pass --hosts", etcd.display()))?
            .into_iter()
            .next()
            .with_context(|| format!("{} holds no certificate; pass --hosts", etcd.display()))?;
        info.sans
            .iter()
            .map(|s| {
                s.trim_start_matches("DNS:")
                    .trim_start_matches("IP:")
                    .to_string()
            })
            .collect()
    } else {
        args.hosts.clone()
    };
    let members = (0..)
        .take_while(|i| args.dir.join(huione_certs::member_cert_file(*i)).exists())
        .count();
    let opts = CertOptions::new(hosts)
        .with_members(members)
        .with_days(args.days);
    let certs = huione_certs::generate_with_ca(ca, &opts)?;
    // Same CA (unchanged files are left alone); every leaf is replaced by write + fsync +
    // rename, so a reader sees the old file or the new one, never a partial one.
    let paths = huione_certs::write(&args.dir, &certs, true)?;
    println!(
        "Renewed in {} (valid {} days, same CA):",
        args.dir.display(),
        args.days
    );
    for pair in paths.pairs().into_iter().skip(1) {
        let info = huione_certs::inspect(&pair.cert)?;
        let until = info
            .first()
            .map_or("-".to_string(), |i| huione_certs::utc(i.not_after));
        println!("  {} (until {until})", pair.cert.display());
    }
    println!();
    println!(
        "Running validators load them on SIGHUP, or by themselves within 10 s of the files \
         changing; restart etcd members one at a time to load theirs (README: Operating \
         for months)."
    );
    Ok(())
}

fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let infos = if args.file.is_empty() {
        let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("certs"));
        huione_certs::inspect_dir(&dir)?
    } else {
        let mut infos = Vec::new();
        for file in &args.file {
            infos.extend(huione_certs::inspect(file)?);
        }
        infos
    };
    if infos.is_empty() {
        bail!("no certificates found");
    }
    let now = OffsetDateTime::now_utc();
    for (n, info) in infos.iter().enumerate() {
        if n > 0 {
            println!();
        }
        print!("{}", info.describe(now));
    }
    Ok(())
}
