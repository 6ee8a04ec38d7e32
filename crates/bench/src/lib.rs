//! Benchmark helpers: latency summaries printed by the bench binaries.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// p50/p99/max of a set of samples.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    pub fn of(samples: &mut [Duration]) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Summary {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: *samples.last().expect("non-empty"),
        }
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Prints one table row.
pub fn row(name: &str, s: &Summary, extra: &str) {
    println!(
        "{name:<44} {:>6} {:>10} {:>10} {:>10}  {extra}",
        s.count,
        ms(s.p50),
        ms(s.p99),
        ms(s.max)
    );
}

pub fn header() {
    println!(
        "{:<44} {:>6} {:>10} {:>10} {:>10}",
        "case", "n", "p50 ms", "p99 ms", "max ms"
    );
}

/// GET `path` from `127.0.0.1:port`; the body.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http(port, "GET", path, "")
}

/// One HTTP/1.1 request to `127.0.0.1:port` (3 s read timeout); the body.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.p50, Duration::from_millis(51));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
    }
}
