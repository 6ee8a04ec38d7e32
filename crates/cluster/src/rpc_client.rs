//! A minimal blocking JSON-RPC client over HTTP/1.1 on a std `TcpStream`: one request per
//! connection, bounded in time (connect, write, read) and in response size. Enough for
//! the launcher's `getHealth`/`getSlot` polling without pulling an HTTP stack into the
//! launcher.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Largest response accepted.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Why a call did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RpcCallError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr} answered HTTP {status}: {body}")]
    Http {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
    #[error("{addr} sent a malformed response: {reason}")]
    Malformed { addr: SocketAddr, reason: String },
    /// The node answered with a JSON-RPC error (e.g. getHealth's "Node is behind").
    #[error("{message} (JSON-RPC error {code})")]
    Rpc { code: i64, message: String },
}

/// A JSON-RPC endpoint on `addr`.
#[derive(Clone, Debug)]
pub struct RpcClient {
    addr: SocketAddr,
    timeout: Duration,
}

impl RpcClient {
    /// Each call (connect, send, receive) must finish within `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        RpcClient { addr, timeout }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls `method` with `params` and returns its `result`.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, RpcCallError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let (status, body) = self.post(body.to_string().as_bytes())?;
        let malformed = |reason: String| RpcCallError::Malformed {
            addr: self.addr,
            reason,
        };
        if status != 200 {
            return Err(RpcCallError::Http {
                addr: self.addr,
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            });
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| malformed(e.to_string()))?;
        if let Some(err) = v.get("error") {
            return Err(RpcCallError::Rpc {
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_string(),
            });
        }
        v.get("result")
            .cloned()
            .ok_or_else(|| malformed("neither result nor error".into()))
    }

    /// `getSlot` at `commitment` ("processed", "confirmed" or "finalized").
    pub fn get_slot(&self, commitment: &str) -> Result<u64, RpcCallError> {
        let v = self.call("getSlot", json!([{ "commitment": commitment }]))?;
        v.as_u64().ok_or_else(|| RpcCallError::Malformed {
            addr: self.addr,
            reason: format!("getSlot returned {v}, not a number"),
        })
    }

    /// `getHealth`: `Ok` when the node says "ok"; an unhealthy node is an
    /// [`RpcCallError::Rpc`].
    pub fn get_health(&self) -> Result<(), RpcCallError> {
        match self.call("getHealth", json!([]))? {
            Value::String(s) if s == "ok" => Ok(()),
            other => Err(RpcCallError::Malformed {
                addr: self.addr,
                reason: format!("getHealth returned {other}"),
            }),
        }
    }

    fn post(&self, body: &[u8]) -> Result<(u16, Vec<u8>), RpcCallError> {
        let deadline = Instant::now() + self.timeout;
        let io = |source| RpcCallError::Io {
            addr: self.addr,
            source,
        };
        let mut stream =
            TcpStream::connect_timeout(&self.addr, self.timeout).map_err(|source| {
                RpcCallError::Connect {
                    addr: self.addr,
                    source,
                }
            })?;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        stream.set_write_timeout(Some(left())).map_err(io)?;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .map_err(|e| self.timeout_or(e))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(done) = parse_response(&buf).map_err(|reason| RpcCallError::Malformed {
                addr: self.addr,
                reason,
            })? {
                return Ok(done);
            }
            if Instant::now() >= deadline {
                return Err(RpcCallError::Timeout {
                    addr: self.addr,
                    timeout: self.timeout,
                });
            }
            stream.set_read_timeout(Some(left())).map_err(io)?;
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return complete_at_eof(&buf).map_err(|reason| RpcCallError::Malformed {
                        addr: self.addr,
                        reason,
                    })
                }
                Ok(n) => {
                    if buf.len() + n > MAX_RESPONSE_BYTES {
                        return Err(RpcCallError::Malformed {
                            addr: self.addr,
                            reason: format!("response larger than {MAX_RESPONSE_BYTES} bytes"),
                        });
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.timeout_or(e)),
            }
        }
    }

    fn timeout_or(&self, e: std::io::Error) -> RpcCallError {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            RpcCallError::Timeout {
                addr: self.addr,
                timeout: self.timeout,
            }
        } else {
            RpcCallError::Io {
                addr: self.addr,
                source: e,
            }
        }
    }
}

/// How a response body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Splits a response into status, framing and the offset of the body; `None` while the head
/// is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, Framing, usize)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("response head larger than 64 KiB".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut framing = Framing::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            if n > MAX_RESPONSE_BYTES {
                return Err(format!("Content-Length {n} is too large"));
            }
            framing = Framing::Length(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        }
    }
    Ok(Some((status, framing, end + 4)))
}

/// The status and body once `buf` holds a complete response, `None` if more is needed.
pub fn parse_response(buf: &[u8]) -> Result<Option<(u16, Vec<u8>)>, String> {
    let Some((status, framing, start)) = parse_head(buf)? else {
        return Ok(None);
    };
    let body = &buf[start..];
    match framing {
        Framing::Length(n) if body.len() >= n => Ok(Some((status, body[..n].to_vec()))),
        Framing::Length(_) | Framing::UntilClose => Ok(None),
        Framing::Chunked => decode_chunked(body).map(|o| o.map(|b| (status, b))),
    }
}

/// At end of stream: a response delimited by the close is complete; others are truncated.
fn complete_at_eof(buf: &[u8]) -> Result<(u16, Vec<u8>), String> {
    match parse_head(buf)? {
        Some((status, Framing::UntilClose, start)) => Ok((status, buf[start..].to_vec())),
        Some(_) => Err("connection closed before the end of the body".into()),
        None => Err("connection closed before a complete response head".into()),
    }
}

/// Decodes a chunked body; `None` until the final zero-size chunk has arrived.
fn decode_chunked(mut body: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if size > MAX_RESPONSE_BYTES || out.len() + size > MAX_RESPONSE_BYTES {
            return Err("chunked body too large".into());
        }
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if body.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_length_chunked_and_partial_responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_response(r).unwrap(), Some((200, b"hello".to_vec())));
        assert_eq!(parse_response(&r[..r.len() - 1]).unwrap(), None);
        assert_eq!(parse_response(&r[..10]).unwrap(), None);
        let c = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(c).unwrap(), Some((200, b"abcde".to_vec())));
        assert_eq!(parse_response(&c[..c.len() - 7]).unwrap(), None);
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert_eq!(
            complete_at_eof(b"HTTP/1.0 503 Busy\r\n\r\nbusy").unwrap(),
            (503, b"busy".to_vec())
        );
        assert!(complete_at_eof(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
    }

    /// Serves one connection with a 200 response carrying `body`.
    fn serve_once(body: &str) -> SocketAddr {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(response.as_bytes());
        });
        addr
    }

    #[test]
    fn results_errors_and_timeouts() {
        let t = Duration::from_secs(2);
        let addr = serve_once(r#"{"jsonrpc":"2.0","id":1,"result":42}"#);
        assert_eq!(RpcClient::new(addr, t).get_slot("finalized").unwrap(), 42);
        let addr = serve_once(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"Node is unhealthy"}}"#,
        );
        match RpcClient::new(addr, t).get_health() {
            Err(RpcCallError::Rpc { code, message }) => {
                assert_eq!((code, message.as_str()), (-32005, "Node is unhealthy"))
            }
            other => panic!("{other:?}"),
        }
        // Accepts but never answers: bounded by the timeout.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let err = RpcClient::new(l.local_addr().unwrap(), Duration::from_millis(200))
            .get_slot("processed")
            .unwrap_err();
        assert!(matches!(err, RpcCallError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        drop(l);
        // Nobody listening.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            RpcClient::new(addr, t).get_slot("processed"),
            Err(RpcCallError::Connect { .. })
        ));
    }
}
