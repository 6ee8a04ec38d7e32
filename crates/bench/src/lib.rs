//! Benchmark helpers: latency summaries printed by the bench binaries, and calls to the
//! nodes under test.

use std::time::Duration;

use huione_rpc::client::{blocking::RpcClient, Endpoint};

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

/// GET `path` from `127.0.0.1:port` (`huione_rpc::client`, 3 s); the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    client(port).get_text(path).ok()
}

/// One JSON-RPC call to `127.0.0.1:port` (`huione_rpc::client`, 3 s); its `result`.
pub fn rpc(port: u16, method: &str, params: serde_json::Value) -> Option<serde_json::Value> {
    client(port).call(method, params).ok()
}

fn client(port: u16) -> RpcClient {
    RpcClient::new(Endpoint::local(port)).with_timeout(Duration::from_secs(3))
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
