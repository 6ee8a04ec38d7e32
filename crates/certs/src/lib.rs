//! Certificates for etcd over mutual TLS, replacing the operator guide's cfssl steps: one CA
//! signs the etcd server (and per-member) certificates and the validator client certificate,
//! under the seed's file names.
//!
//! ```no_run
//! use huione_certs::{generate, write, inspect, CertOptions};
//! let certs = generate(&CertOptions::new(["localhost", "127.0.0.1"]).with_members(3))?;
//! let paths = write(std::path::Path::new("certs"), &certs, false)?;
//! for info in inspect(&paths.etcd.cert)? {
//!     println!("{}", info.describe(time::OffsetDateTime::now_utc()));
//! }
//! # Ok::<(), huione_certs::CertError>(())
//! ```
//!
//! For negative tests: [`generate_expired_client`], [`generate_client_cert_with_validity`]
//! (any validity window) and [`generate_foreign_ca_client`] (a client certificate signed by a
//! CA that nobody trusts).

mod error;
mod files;
mod generate;
mod inspect;

pub use error::CertError;
pub use files::{
    member_cert_file, member_key_file, read_ca, read_pair, write, CertPaths, FilePair,
    CA_CERT_FILE, CA_KEY_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE, VALIDATOR_CERT_FILE,
    VALIDATOR_KEY_FILE,
};
pub use generate::{
    generate, generate_ca, generate_client_cert_with_validity, generate_expired_client,
    generate_foreign_ca_client, generate_with_ca, issue, normalize_hosts, CertAndKey, CertOptions,
    ForeignClient, GeneratedCerts, LeafSpec, Validity, CA_COMMON_NAME, DEFAULT_CA_DAYS,
    DEFAULT_DAYS, ETCD_COMMON_NAME, ORGANIZATION, VALIDATOR_COMMON_NAME,
};
pub use inspect::{inspect, inspect_dir, utc, CertInfo, RENEW_BEFORE_DAYS};
pub use time;

#[cfg(test)]
mod tests;
