//! Turning etcd-client / tonic / rustls errors into messages that name the endpoint, the
//! file and the fix, and deciding whether a retry can help.
//!
//! The libraries report most failures as "transport error" or a gRPC `Unavailable` status
//! whose useful part (a rustls error, a TLS alert from the server, "connection refused")
//! sits deep in the `source()` chain; we read the whole chain.

use std::error::Error as StdError;
use std::path::PathBuf;

use tonic::Code;

/// What went wrong with one attempt against one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Certificates or names do not fit: retrying will not help, the configuration must change.
    Tls,
    /// etcd refused the request itself (permission, invalid request): retrying will not help.
    Refused,
    /// Unreachable, timed out, no leader, ...: retrying (here or elsewhere) may help.
    Transient,
    /// etcd's NOSPACE alarm is raised: every write is refused on every member until an
    /// operator frees space and disarms the alarm. Retrying now cannot help.
    NoSpace,
}

#[derive(Clone, Debug)]
pub(super) struct Failure {
    pub kind: Kind,
    pub detail: String,
}

impl Failure {
    pub fn transient(detail: impl Into<String>) -> Self {
        Failure {
            kind: Kind::Transient,
            detail: detail.into(),
        }
    }
}

/// The configuration named in messages.
#[derive(Clone, Debug)]
pub(super) struct TlsNames {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub domain_name: String,
}

/// The error text with every `source()` below it, joined by ": ". Libraries often repeat
/// their source's text in their own; a part contained in another part is dropped.
pub(super) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    join_distinct(parts)
}

fn join_distinct(parts: Vec<String>) -> String {
    let mut kept: Vec<String> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let p = p.trim();
        if p.is_empty() || kept.iter().any(|k| k.contains(p)) {
            continue;
        }
        // A later part that contains this one says everything this one says.
        if parts[i + 1..]
            .iter()
            .any(|q| q.len() > p.len() && q.contains(p))
        {
            continue;
        }
        kept.push(p.to_string());
    }
    // "transport error" alone adds nothing once the cause is known.
    if kept.len() > 1 {
        kept.retain(|k| k != "transport error");
    }
    kept.join(": ")
}

/// Explains an etcd-client error from `endpoint`.
pub(super) fn diagnose(err: &etcd_client::Error, endpoint: &str, names: &TlsNames) -> Failure {
    use etcd_client::Error as E;
    match err {
        E::GRpcStatus(status) => diagnose_status(status, endpoint, names),
        E::TransportError(t) => classify_text(&chain(t), endpoint, names),
        E::IoError(e) => classify_text(&chain(e), endpoint, names),
        other => classify_text(&other.to_string(), endpoint, names),
    }
}

fn diagnose_status(status: &tonic::Status, endpoint: &str, names: &TlsNames) -> Failure {
    let message = status.message();
    let mut parts = vec![message.to_string()];
    let mut cur = status.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    let text = join_distinct(parts);
    match status.code() {
        // Answers from etcd itself.
        Code::PermissionDenied | Code::Unauthenticated => Failure {
            kind: Kind::Refused,
            detail: format!(
                "etcd at {endpoint} refused the request ({text}): etcd auth is on and the \
                 user named by the client certificate's CN ({}) lacks read/write permission \
                 on the key prefix; grant it with `etcdctl role grant-permission`",
                names.cert_file.display()
            ),
        },
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange
            if message.starts_with("etcdserver:") =>
        {
            Failure {
                kind: Kind::Refused,
                detail: format!("etcd at {endpoint} rejected the request: {text}"),
            }
        }
        Code::ResourceExhausted if message.contains("database space exceeded") => Failure {
            kind: Kind::NoSpace,
            detail: format!("etcd at {endpoint} refused the write: {text}"),
        },
        Code::DeadlineExceeded | Code::Cancelled => Failure::transient(format!(
            "etcd at {endpoint} did not answer in time ({text})"
        )),
        _ => classify_text(&text, endpoint, names),
    }
}

/// Classifies by the text of the whole error chain.
fn classify_text(text: &str, endpoint: &str, names: &TlsNames) -> Failure {
    let lower = text.to_ascii_lowercase();
    let ca = names.ca_file.display();
    let cert = names.cert_file.display();
    let tls = |detail: String| Failure {
        kind: Kind::Tls,
        detail,
    };
    // The server's certificate, checked by us (rustls "invalid peer certificate: ...").
    if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        return tls(format!(
            "the etcd server certificate at {endpoint} is not signed by the CA in {ca} \
             (--etcd-cacert-file): is etcd.pem signed by etcd-ca.pem? ({text})"
        ));
    }
    if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        return tls(format!(
            "the server certificate at {endpoint} does not carry --etcd-domain-name {}: pass \
             a name the certificate was issued for, or reissue etcd.pem with that name as a \
             host ({text})",
            names.domain_name
        ));
    }
    if lower.contains("invalid peer certificate") {
        let what = if lower.contains("expired") {
            "has expired: reissue etcd.pem"
        } else if lower.contains("notvalidyet") {
            "is not valid yet: check the clocks, or reissue etcd.pem"
        } else {
            "was rejected: is etcd.pem signed by etcd-ca.pem, for the right host name?"
        };
        return tls(format!(
            "the etcd server certificate at {endpoint} {what} ({text})"
        ));
    }
    // Our certificate, checked by the server: with TLS 1.3 the server's verdict arrives as an
    // alert after our side of the handshake is done.
    if lower.contains("received fatal alert") || lower.contains("alertreceived") {
        let expired = lower.contains("certificateexpired") || lower.contains("certificate expired");
        return tls(format!(
            "the etcd server at {endpoint} rejected the client certificate {cert} \
             (--etcd-cert-file): is validator.pem signed by the CA etcd trusts \
             (--trusted-ca-file)? is it expired?{} ({text})",
            if expired {
                " (the server says it has expired)"
            } else {
                ""
            }
        ));
    }
    if lower.contains("invalid dns name") || lower.contains("invalid server name") {
        return tls(format!(
            "--etcd-domain-name {:?} is not a valid DNS name or IP address ({text})",
            names.domain_name
        ));
    }
    // The network.
    if lower.contains("connection refused") {
        return Failure::transient(format!(
            "nothing listens on {endpoint} (connection refused): is etcd running there, \
             and is --etcd-endpoint right?"
        ));
    }
    if lower.contains("timed out") || lower.contains("deadline") || lower.contains("elapsed") {
        return Failure::transient(format!(
            "etcd at {endpoint} did not answer in time ({text})"
        ));
    }
    if lower.contains("no route to host")
        || lower.contains("network is unreachable")
        || lower.contains("failed to lookup")
        || lower.contains("dns error")
    {
        return Failure::transient(format!("cannot reach {endpoint}: {text}"));
    }
    Failure::transient(format!("etcd at {endpoint}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> TlsNames {
        TlsNames {
            ca_file: "certs/etcd-ca.pem".into(),
            cert_file: "certs/validator.pem".into(),
            domain_name: "localhost".into(),
        }
    }

    #[test]
    fn server_alerts_mean_our_certificate_was_rejected() {
        let f = classify_text(
            "transport error: connection error: received fatal alert: CertificateExpired",
            "https://10.0.0.5:2379",
            &names(),
        );
        assert_eq!(f.kind, Kind::Tls);
        assert!(f
            .detail
            .contains("rejected the client certificate certs/validator.pem"));
        assert!(f.detail.contains("(the server says it has expired)"));
        assert!(f.detail.contains("https://10.0.0.5:2379"));
    }

    #[test]
    fn network_failures_are_transient_and_name_the_endpoint() {
        let f = classify_text(
            "tcp connect error: Connection refused (os error 111)",
            "https://127.0.0.1:1",
            &names(),
        );
        assert_eq!(f.kind, Kind::Transient);
        assert!(f.detail.contains("nothing listens on https://127.0.0.1:1"));
    }

    #[test]
    fn repeated_parts_of_an_error_chain_are_dropped() {
        let parts = vec![
            "transport error".to_string(),
            "invalid peer certificate: UnknownIssuer".to_string(),
            "transport error: invalid peer certificate: UnknownIssuer".to_string(),
        ];
        assert_eq!(
            join_distinct(parts),
            "transport error: invalid peer certificate: UnknownIssuer"
        );
    }
}
