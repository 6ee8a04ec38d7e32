//! The one error type of this crate: every variant names the file or value at fault and the fix.

use std::path::PathBuf;

/// Everything that can go wrong while making, writing or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// `--hosts` was empty: the etcd certificates would be valid for no address at all.
    #[error(
        "no hosts given: pass the names and IP addresses clients use to reach etcd, \
         e.g. --hosts localhost,127.0.0.1"
    )]
    NoHosts,

    /// A host is neither an IP address nor a valid DNS name.
    #[error("invalid host {host:?} in --hosts: {reason} (use a DNS name like etcd.example or an IP address like 10.0.0.5)")]
    InvalidHost { host: String, reason: String },

    /// `not_after` is not later than `not_before`.
    #[error("invalid validity for {what}: not_after ({not_after}) must be later than not_before ({not_before})")]
    InvalidValidity {
        what: String,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    },

    /// rcgen refused to build or sign a certificate.
    #[error("cannot create the {what} certificate: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },

    /// A target file exists and `force` was not given. Nothing was written.
    #[error(
        "{} already exists; nothing was written. Pass --force to regenerate all certificates \
         (clients and etcd then need the new files), or --reuse-ca to keep the CA, \
         or choose another --dir", path.display()
    )]
    Exists { path: PathBuf },

    /// Reading or writing a file failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file or directory that should exist does not.
    #[error("{} does not exist: {hint}", path.display())]
    NotFound { path: PathBuf, hint: String },

    /// A file is not PEM at all.
    #[error(
        "{} is not a PEM file (expected a \"-----BEGIN CERTIFICATE-----\" block): {detail}",
        path.display()
    )]
    NotPem { path: PathBuf, detail: String },

    /// A PEM file holds no certificate (for example it is a private key).
    #[error("{} contains no certificate (PEM blocks found: {labels}); pass a certificate file such as etcd.pem, not a *-key.pem", path.display())]
    NoCertificate { path: PathBuf, labels: String },

    /// A CERTIFICATE block could not be parsed as X.509.
    #[error("{} holds a CERTIFICATE block that is not valid X.509: {detail}", path.display())]
    BadCertificate { path: PathBuf, detail: String },

    /// The CA to sign with could not be loaded (bad key, key and certificate not a pair, ...).
    /// `what` names the files (or says the CA was given in memory).
    #[error("cannot use {what} as the CA: {detail}")]
    BadCa { what: String, detail: String },

    /// A directory holds no certificate files.
    #[error("{} holds no certificate files (*.pem): create them with `huione-certs new --dir {}`", dir.display(), dir.display())]
    NoCertificatesInDir { dir: PathBuf },
}

impl CertError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        CertError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn generate(what: impl Into<String>, source: rcgen::Error) -> Self {
        CertError::Generate {
            what: what.into(),
            source,
        }
    }
}
