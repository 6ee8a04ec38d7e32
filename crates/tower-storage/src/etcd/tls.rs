//! Reading and checking the mutual-TLS files before any connection is made, so that a
//! wrong path, a key passed as a certificate or an expired client certificate is reported
//! with the file and the flag, not as a TLS failure later.

use std::path::Path;

use etcd_client::{Certificate, Identity, TlsOptions};
use huione_certs::time::OffsetDateTime;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::EtcdConfig;
use crate::StorageError;

pub(super) const CA_FLAG: &str = "--etcd-cacert-file";
pub(super) const CERT_FLAG: &str = "--etcd-cert-file";
pub(super) const KEY_FLAG: &str = "--etcd-key-file";

/// Reads the CA, client certificate and key named by `config` and builds the TLS options
/// (the handshake bounded by `connect_timeout`).
pub(super) fn tls_options(config: &EtcdConfig) -> Result<TlsOptions, StorageError> {
    let ca = read_certificate(&config.ca_file, CA_FLAG, "the CA certificate")?;
    let cert = read_certificate(&config.cert_file, CERT_FLAG, "the client certificate")?;
    check_client_cert_validity(&config.cert_file)?;
    let key = read_key(&config.key_file)?;
    if config.domain_name.trim().is_empty() {
        return Err(StorageError::Config(
            "--etcd-domain-name is empty: pass the name the etcd server certificate carries \
             (e.g. localhost, or the etcd host's DNS name)"
                .into(),
        ));
    }
    Ok(TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(config.domain_name.clone())
        .timeout(config.connect_timeout))
}

fn read_file(path: &Path, flag: &str, what: &str) -> Result<Vec<u8>, StorageError> {
    std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "it does not exist".to_string(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (the validator's user must be able to read it)".to_string()
            }
            _ => e.to_string(),
        };
        StorageError::Config(format!(
            "cannot read {what} {} ({flag}): {why}; check the path, or create the \
             certificates with `huione-certs new --dir DIR`",
            path.display()
        ))
    })
}

/// A PEM file with at least one parsable X.509 CERTIFICATE block.
fn read_certificate(path: &Path, flag: &str, what: &str) -> Result<Vec<u8>, StorageError> {
    let bytes = read_file(path, flag, what)?;
    // Parses every block: tonic would silently skip unparsable CA certificates and the
    // failure would only show up as "unknown issuer" during the handshake.
    huione_certs::inspect(path).map_err(|e| {
        StorageError::Config(format!(
            "{what} {} ({flag}) is not usable: {e}",
            path.display()
        ))
    })?;
    Ok(bytes)
}

fn read_key(path: &Path) -> Result<Vec<u8>, StorageError> {
    let bytes = read_file(path, KEY_FLAG, "the client private key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let hint = if String::from_utf8_lossy(&bytes).contains("BEGIN CERTIFICATE") {
            "it holds a certificate; pass the key file such as validator-key.pem".to_string()
        } else {
            format!("no PEM private key found ({e}); expected a \"-----BEGIN PRIVATE KEY-----\" block such as validator-key.pem")
        };
        StorageError::Config(format!(
            "the client private key {} ({KEY_FLAG}) is not usable: {hint}",
            path.display()
        ))
    })?;
    Ok(bytes)
}

/// etcd refuses an expired client certificate with a bare TLS alert; say it plainly first.
fn check_client_cert_validity(path: &Path) -> Result<(), StorageError> {
    let Ok(infos) = huione_certs::inspect(path) else {
        return Ok(()); // read_certificate already reported it
    };
    let Some(leaf) = infos.first() else {
        return Ok(());
    };
    let now = OffsetDateTime::now_utc();
    if leaf.is_expired(now) {
        return Err(StorageError::Config(format!(
            "the client certificate {} ({CERT_FLAG}) expired on {} ({} days ago); etcd will \
             refuse it. Issue a new one with the CA etcd trusts (`huione-certs renew`)",
            path.display(),
            huione_certs::utc(leaf.not_after),
            (now - leaf.not_after).whole_days()
        )));
    }
    if leaf.not_yet_valid(now) {
        return Err(StorageError::Config(format!(
            "the client certificate {} ({CERT_FLAG}) is not valid before {}; check this \
             machine's clock, or issue a new certificate",
            path.display(),
            leaf.not_before
        )));
    }
    Ok(())
}
