//! What a node sees of its cluster, and what that allows (pure: no I/O, time passed in).
//!
//! * [`Visibility`]: the share of the cluster's stake whose nodes are in our gossip table
//!   (ours included). A node that sees too little of it is *isolated*: its chain is its own.
//! * [`Persisting`]: a condition that must hold for a grace period before it is reported
//!   (isolation, votes not landing), so a start-up or one late block does not flap health.
//! * [`may_reclaim`]: a restarted primary takes its identity back from the standby only
//!   into a visible cluster it has caught up with. Isolated, it stays a follower: taking
//!   the lock would stop the standby (which still votes in the real cluster) and leave the
//!   vote account voting on a private fork.

use std::collections::BTreeSet;

use huione_core::Genesis;
use huione_keys::Pubkey;

/// Stake visible in gossip against the cluster's total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Visibility {
    pub visible_stake: u64,
    pub total_stake: u64,
    /// Other identities in gossip (staked or not).
    pub peers: usize,
}

impl Visibility {
    /// Our identity and the peers' (each counted once) against the genesis stakes.
    pub fn compute(genesis: &Genesis, me: Pubkey, peers: impl IntoIterator<Item = Pubkey>) -> Self {
        let mut seen: BTreeSet<Pubkey> = peers.into_iter().collect();
        seen.remove(&me);
        let peers = seen.len();
        seen.insert(me);
        let total_stake = genesis.validators.iter().map(|v| v.stake).sum();
        let visible_stake = genesis
            .validators
            .iter()
            .filter(|v| seen.contains(&v.identity))
            .map(|v| v.stake)
            .sum();
        Visibility {
            visible_stake,
            total_stake,
            peers,
        }
    }

    pub fn percent(&self) -> f64 {
        if self.total_stake == 0 {
            return 0.0;
        }
        self.visible_stake as f64 * 100.0 / self.total_stake as f64
    }

    /// At least `min_percent` of the stake is visible.
    pub fn at_least(&self, min_percent: f64) -> bool {
        self.visible_stake as f64 * 100.0 >= min_percent * self.total_stake as f64
    }
}

/// A condition that counts only once it has held for `grace_ms` without a break.
#[derive(Clone, Debug)]
pub struct Persisting {
    grace_ms: u64,
    since_ms: Option<u64>,
}

impl Persisting {
    pub fn new(grace_ms: u64) -> Self {
        Persisting {
            grace_ms,
            since_ms: None,
        }
    }

    /// Feeds the current state; true when it has held for the grace period.
    pub fn update(&mut self, holds: bool, now_ms: u64) -> bool {
        if !holds {
            self.since_ms = None;
            return false;
        }
        let since = *self.since_ms.get_or_insert(now_ms);
        now_ms.saturating_sub(since) >= self.grace_ms
    }

    /// For how long it has held (0 when it does not).
    pub fn held_ms(&self, now_ms: u64) -> u64 {
        self.since_ms.map_or(0, |s| now_ms.saturating_sub(s))
    }
}

/// Why a restarted primary does not reclaim its identity yet.
#[derive(Clone, Debug, PartialEq)]
pub enum ReclaimWait {
    /// Too little of the cluster is visible in gossip.
    ClusterNotVisible {
        percent: f64,
        needed: f64,
        peers: usize,
    },
    /// The cluster is visible, but our chain is behind theirs.
    NotCaughtUp,
}

impl std::fmt::Display for ReclaimWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReclaimWait::ClusterNotVisible {
                percent,
                needed,
                peers,
            } => write!(
                f,
                "sees {peers} peers holding {percent:.1}% of the stake in gossip (with itself), \
                 needs {needed:.1}% (--reclaim-min-visible-stake): staying a follower; the \
                 standby keeps the identity"
            ),
            ReclaimWait::NotCaughtUp => write!(f, "not caught up with the cluster yet"),
        }
    }
}

/// The reclaim rule: a visible cluster first, then caught up with it.
pub fn may_reclaim(vis: &Visibility, min_percent: f64, caught_up: bool) -> Result<(), ReclaimWait> {
    if !vis.at_least(min_percent) {
        return Err(ReclaimWait::ClusterNotVisible {
            percent: vis.percent(),
            needed: min_percent,
            peers: vis.peers,
        });
    }
    if !caught_up {
        return Err(ReclaimWait::NotCaughtUp);
    }
    Ok(())
}

/// Our votes are not landing: we sent a vote for `sent` but the newest vote of ours the
/// cluster's blocks carry (`landed`) is more than `max_lag` slots older.
pub fn votes_not_landing(sent: Option<u64>, landed: u64, max_lag: u64) -> bool {
    sent.is_some_and(|s| s > landed.saturating_add(max_lag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use huione_core::{GenesisValidator, Hash};

    fn pk(i: u8) -> Pubkey {
        Pubkey([i; 32])
    }

    fn genesis(stakes: &[u64]) -> Genesis {
        Genesis {
            validators: stakes
                .iter()
                .enumerate()
                .map(|(i, s)| GenesisValidator {
                    identity: pk(i as u8 + 1),
                    vote_account: pk(i as u8 + 101),
                    authorized_voter: pk(i as u8 + 1),
                    stake: *s,
                })
                .collect(),
            slot_duration_ms: 400,
            slots_per_epoch: 64,
            start_time_ms: 0,
            hash: Hash::default(),
        }
    }

    #[test]
    fn visible_stake_counts_each_identity_once() {
        let g = genesis(&[100, 100, 100]);
        // Alone: only our own stake.
        let alone = Visibility::compute(&g, pk(3), []);
        assert_eq!(
            (alone.visible_stake, alone.total_stake, alone.peers),
            (100, 300, 0)
        );
        assert!(!alone.at_least(66.67));
        // A standby running our identity shows up as us; an unstaked node adds nothing.
        let v = Visibility::compute(&g, pk(3), [pk(3), pk(1), pk(1), pk(9)]);
        assert_eq!((v.visible_stake, v.peers), (200, 2));
        assert!(!v.at_least(66.67), "exactly 2/3 is not more than 2/3");
        let all = Visibility::compute(&g, pk(3), [pk(1), pk(2)]);
        assert_eq!(all.visible_stake, 300);
        assert!(all.at_least(66.67) && (all.percent() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn reclaim_needs_a_visible_cluster_then_catching_up() {
        let g = genesis(&[100, 100, 100]);
        let alone = Visibility::compute(&g, pk(3), []);
        // Isolated: "caught up" with nobody does not count.
        let e = may_reclaim(&alone, 66.67, true).unwrap_err();
        assert!(matches!(e, ReclaimWait::ClusterNotVisible { peers: 0, .. }));
        assert!(e.to_string().contains("33.3%"), "{e}");
        let all = Visibility::compute(&g, pk(3), [pk(1), pk(2)]);
        assert_eq!(
            may_reclaim(&all, 66.67, false),
            Err(ReclaimWait::NotCaughtUp)
        );
        assert_eq!(may_reclaim(&all, 66.67, true), Ok(()));
        // 0 restores the old behaviour (catching up only).
        assert_eq!(may_reclaim(&alone, 0.0, true), Ok(()));
    }

    #[test]
    fn persisting_conditions_need_the_grace_period_unbroken() {
        let mut p = Persisting::new(5_000);
        assert!(!p.update(true, 1_000));
        assert!(!p.update(true, 5_999));
        assert!(p.update(true, 6_000));
        assert_eq!(p.held_ms(6_000), 5_000);
        assert!(!p.update(false, 6_100));
        assert!(!p.update(true, 7_000));
        assert!(p.update(true, 12_000));
        assert!(votes_not_landing(Some(100), 80, 16));
        assert!(!votes_not_landing(Some(96), 80, 16));
        assert!(!votes_not_landing(None, 0, 16));
    }
}
