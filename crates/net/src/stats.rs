//! Counters the daemon reads into its metrics, and a rate limiter for drop logs.
//!
//! [`NetStats`] is a plain struct of atomics shared by the transport's tasks (no global
//! registry); [`NetStats::snapshot`] copies it into plain numbers.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a received datagram or record was dropped. One counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Longer than `MAX_DATAGRAM_BYTES`.
    Oversize,
    /// Ended before the message did.
    Truncated,
    /// Not a huione datagram.
    BadMagic,
    /// Another wire version (a node on different software).
    UnsupportedVersion,
    /// A message kind this version does not know.
    UnknownKind,
    /// A count or string over its cap.
    OverLimit,
    /// Invalid tag, UTF-8, or bytes after the message.
    Malformed,
    /// A contact info not signed by its identity.
    BadSignature,
    /// A contact info from another cluster (other genesis hash).
    WrongCluster,
    /// A contact info signed too far in the future, or already expired.
    BadWallclock,
    /// A new identity while the gossip table is full.
    TableFull,
    /// A contact info advertising an address we cannot reach (unspecified, or loopback
    /// while we are not on loopback): its node is misconfigured.
    UnreachableAddress,
}

impl DropReason {
    pub const ALL: [DropReason; 12] = [
        DropReason::Oversize,
        DropReason::Truncated,
        DropReason::BadMagic,
        DropReason::UnsupportedVersion,
        DropReason::UnknownKind,
        DropReason::OverLimit,
        DropReason::Malformed,
        DropReason::BadSignature,
        DropReason::WrongCluster,
        DropReason::BadWallclock,
        DropReason::TableFull,
        DropReason::UnreachableAddress,
    ];

    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversize => "oversize",
            DropReason::Truncated => "truncated",
            DropReason::BadMagic => "bad_magic",
            DropReason::UnsupportedVersion => "unsupported_version",
            DropReason::UnknownKind => "unknown_kind",
            DropReason::OverLimit => "over_limit",
            DropReason::Malformed => "malformed",
            DropReason::BadSignature => "bad_signature",
            DropReason::WrongCluster => "wrong_cluster",
            DropReason::BadWallclock => "bad_wallclock",
            DropReason::TableFull => "table_full",
            DropReason::UnreachableAddress => "unreachable_address",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Live counters, shared between the transport's tasks and the daemon.
#[derive(Debug, Default)]
pub struct NetStats {
    pub datagrams_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub datagrams_sent: AtomicU64,
    /// Sends that failed (including a full socket buffer on the receive path's replies).
    pub send_errors: AtomicU64,
    /// Events handed to the daemon's channel.
    pub events_delivered: AtomicU64,
    /// Events dropped because the daemon's channel was full.
    pub events_dropped_channel_full: AtomicU64,
    /// Contact infos accepted into the gossip table (new or newer).
    pub contact_infos_accepted: AtomicU64,
    /// Table entries removed because they were not refreshed in time.
    pub contact_infos_expired: AtomicU64,
    pub duplicate_instance_events: AtomicU64,
    /// One counter per [`DropReason`], in [`DropReason::ALL`] order.
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Wall-clock ms of the last well-formed message from another node (gossip, vote,
    /// block, repair, announcement; not an address echo); 0 = none yet. Peers push gossip
    /// every 500 ms, so a long silence means this node is cut off (`huioneStatus`).
    last_peer_message_ms: AtomicU64,
}

/// A plain copy of [`NetStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStatsSnapshot {
    pub datagrams_received: u64,
    pub bytes_received: u64,
    pub datagrams_sent: u64,
    pub send_errors: u64,
    pub events_delivered: u64,
    pub events_dropped_channel_full: u64,
    pub contact_infos_accepted: u64,
    pub contact_infos_expired: u64,
    pub duplicate_instance_events: u64,
    /// `(reason, count)` for every [`DropReason`].
    pub dropped: Vec<(DropReason, u64)>,
}

impl NetStatsSnapshot {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

impl NetStats {
    pub fn record_peer_message(&self, now_ms: u64) {
        self.last_peer_message_ms
            .fetch_max(now_ms, Ordering::Relaxed);
    }

    /// When the last message from another node arrived (wall-clock ms), if any has.
    pub fn last_peer_message_ms(&self) -> Option<u64> {
        Some(self.last_peer_message_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    pub fn record_drop(&self, reason: DropReason) {
        self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> NetStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetStatsSnapshot {
            datagrams_received: get(&self.datagrams_received),
            bytes_received: get(&self.bytes_received),
            datagrams_sent: get(&self.datagrams_sent),
            send_errors: get(&self.send_errors),
            events_delivered: get(&self.events_delivered),
            events_dropped_channel_full: get(&self.events_dropped_channel_full),
            contact_infos_accepted: get(&self.contact_infos_accepted),
            contact_infos_expired: get(&self.contact_infos_expired),
            duplicate_instance_events: get(&self.duplicate_instance_events),
            dropped: DropReason::ALL
                .iter()
                .map(|r| (*r, self.dropped(*r)))
                .collect(),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Logs at most one line per reason per interval, with how many were suppressed, so
/// a flood of garbage cannot flood the log.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval_ms: u64,
    /// Per reason: when we last logged, and drops since then.
    state: [(Option<u64>, u64); DropReason::ALL.len()],
}

impl LogLimiter {
    pub(crate) fn new(interval_ms: u64) -> Self {
        LogLimiter {
            interval_ms,
            state: [(None, 0); DropReason::ALL.len()],
        }
    }

    /// `Some(suppressed)` when this drop should be logged (with the count of drops not
    /// logged since the last line), `None` when it should stay quiet.
    pub(crate) fn allow(&mut self, reason: DropReason, now_ms: u64) -> Option<u64> {
        let (last, suppressed) = &mut self.state[reason.index()];
        match last {
            Some(t) if now_ms.saturating_sub(*t) < self.interval_ms => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(now_ms);
                Some(std::mem::take(suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_logs_once_per_interval_and_counts_the_rest() {
        let mut l = LogLimiter::new(1000);
        assert_eq!(l.allow(DropReason::BadMagic, 0), Some(0));
        assert_eq!(l.allow(DropReason::BadMagic, 10), None);
        assert_eq!(l.allow(DropReason::BadMagic, 999), None);
        assert_eq!(l.allow(DropReason::Truncated, 999), Some(0));
        assert_eq!(l.allow(DropReason::BadMagic, 1000), Some(2));
    }

    #[test]
    fn reasons_index_their_counters_in_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn snapshot_reports_each_reason() {
        let s = NetStats::default();
        s.record_drop(DropReason::Oversize);
        s.record_drop(DropReason::Oversize);
        s.record_drop(DropReason::TableFull);
        let snap = s.snapshot();
        assert_eq!(snap.dropped(DropReason::Oversize), 2);
        assert_eq!(snap.dropped(DropReason::TableFull), 1);
        assert_eq!(snap.dropped_total(), 3);
        assert_eq!(snap.dropped.len(), DropReason::ALL.len());
    }
}
