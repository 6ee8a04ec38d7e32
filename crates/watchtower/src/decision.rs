//! The failover decision as a pure state machine: observations and `now_ms` in, a
//! [`Decision`] out. No sockets, no clock, no processes; the driver (`run`) probes, feeds
//! [`Monitor::observe`], carries out a [`Decision::Failover`] and reports the result with
//! [`Monitor::failover_finished`].
//!
//! Rules, in order:
//! - **Armed** only once the primary has been seen fully healthy: a watchtower started
//!   next to a primary that is still booting does not take its identity.
//! - A check **fails** if any signal says so ([`Failure`]): the primary's RPC is
//!   unreachable, times out, errors or reports itself behind; its slot trails the
//!   standby's; the cluster's view of its vote account trails the other accounts' votes;
//!   it is absent from gossip; or it has heard from no other node for longer than
//!   `max_peer_silence_ms` while the standby hears the cluster (cut off, but its RPC still
//!   answers the watchtower). One healthy check resets the count (hysteresis).
//! - After `unhealthy_checks` consecutive failing checks, and only while the standby is
//!   reachable, caught up and not already running the primary identity, the answer is
//!   [`Decision::Failover`], exactly once per incident.
//! - An **incident** ends only after `cooldown_ms` has passed *and* the primary has been
//!   healthy again for `rearm_checks` consecutive checks with the standby back on its own
//!   identity. A failed attempt is retried after `retry_ms`, at most `max_attempts` times
//!   per incident.

use serde::Serialize;

/// Thresholds; see the flags of the same names for what each is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub unhealthy_checks: u32,
    pub max_vote_lag_slots: u64,
    pub max_slot_lag: u64,
    /// The primary is cut off when it has heard from no other node for longer than this
    /// while the standby has (0: never judge by silence).
    pub max_peer_silence_ms: u64,
    pub cooldown_ms: u64,
    pub rearm_checks: u32,
    pub max_attempts: u32,
    pub retry_ms: u64,
    /// Fail over even while the standby reports itself behind the cluster.
    pub allow_standby_behind: bool,
}

impl Settings {
    /// The shipped defaults: the flags' defaults come from here.
    pub const DEFAULT: Settings = Settings {
        unhealthy_checks: 3,
        max_vote_lag_slots: 16,
        max_slot_lag: 16,
        // In a healthy cluster a node hears other validators' votes every slot and gossip
        // every 500 ms; three checks past this bound decide about 0.9 s after a cut, so
        // that the standby's first vote lands within 2 s at 400 ms slots.
        max_peer_silence_ms: 700,
        cooldown_ms: 60_000,
        rearm_checks: 10,
        max_attempts: 3,
        retry_ms: 1_000,
        allow_standby_behind: false,
    };
}

impl Default for Settings {
    fn default() -> Self {
        Settings::DEFAULT
    }
}

/// What the primary's own RPC said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrimaryRpc {
    /// `getHealth` answered "ok".
    Healthy,
    /// `getHealth` answered "behind" (by this many slots, if it said).
    Behind(Option<u64>),
    /// Connection refused or reset: the process is gone or the port is closed.
    Unreachable(String),
    /// No answer within the RPC timeout: frozen, overloaded or cut off.
    Timeout,
    /// An answer that is not a usable `getHealth` reply.
    Error(String),
}

/// The cluster's view of the primary's vote account (from the standby and any
/// `--cluster-rpc` node): the most favourable view to the primary is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteView {
    /// `lastVote` of the primary's vote account.
    pub primary_last_vote: u64,
    /// The newest `lastVote` of any other vote account, in the same answer.
    pub cluster_last_vote: u64,
}

impl VoteView {
    pub fn lag_slots(&self) -> u64 {
        self.cluster_last_vote
            .saturating_sub(self.primary_last_vote)
    }
}

/// What the standby (the node the failover would switch) said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandbyView {
    /// Its current identity (`getIdentity`).
    pub identity: String,
    /// `getHealth` answered "ok".
    pub caught_up: bool,
}

/// One check's results. `None` means the signal could not be read this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub primary_rpc: PrimaryRpc,
    /// The primary's processed slot (`getSlot`).
    pub primary_slot: Option<u64>,
    /// The standby's processed slot.
    pub standby_slot: Option<u64>,
    pub standby: Option<StandbyView>,
    pub votes: Option<VoteView>,
    /// Whether the primary identity is in the cluster's gossip table (`getClusterNodes`).
    pub gossip_present: Option<bool>,
    /// How long ago the primary, and the standby, last heard from any other node
    /// (`huioneStatus`'s `peerMessageAgeMs`; None: not reported).
    pub primary_silence_ms: Option<u64>,
    pub standby_silence_ms: Option<u64>,
}

/// Why a check failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    PrimaryRpcUnreachable {
        error: String,
    },
    PrimaryRpcTimeout,
    PrimaryRpcError {
        error: String,
    },
    PrimaryBehind {
        slots: Option<u64>,
    },
    PrimarySlotLag {
        slots: u64,
    },
    VoteLag {
        slots: u64,
    },
    GossipAbsent,
    PrimaryCutOff {
        silence_ms: u64,
        standby_silence_ms: u64,
    },
}

impl Failure {
    /// A short, stable name (metrics label, hook variable).
    pub fn label(&self) -> &'static str {
        match self {
            Failure::PrimaryRpcUnreachable { .. } => "primary_rpc_unreachable",
            Failure::PrimaryRpcTimeout => "primary_rpc_timeout",
            Failure::PrimaryRpcError { .. } => "primary_rpc_error",
            Failure::PrimaryBehind { .. } => "primary_behind",
            Failure::PrimarySlotLag { .. } => "primary_slot_lag",
            Failure::VoteLag { .. } => "vote_lag",
            Failure::GossipAbsent => "gossip_absent",
            Failure::PrimaryCutOff { .. } => "primary_cut_off",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::PrimaryRpcUnreachable { error } => {
                write!(f, "the primary's RPC is unreachable ({error})")
            }
            Failure::PrimaryRpcTimeout => write!(f, "the primary's RPC did not answer in time"),
            Failure::PrimaryRpcError { error } => {
                write!(f, "the primary's RPC answered with an error ({error})")
            }
            Failure::PrimaryBehind { slots: Some(n) } => {
                write!(f, "the primary reports itself {n} slots behind")
            }
            Failure::PrimaryBehind { slots: None } => {
                write!(f, "the primary reports itself unhealthy")
            }
            Failure::PrimarySlotLag { slots } => {
                write!(
                    f,
                    "the primary's slot trails the standby's by {slots} slots"
                )
            }
            Failure::VoteLag { slots } => write!(
                f,
                "the cluster sees the primary's vote account {slots} slots behind the newest vote"
            ),
            Failure::GossipAbsent => write!(f, "the primary identity is absent from gossip"),
            Failure::PrimaryCutOff {
                silence_ms,
                standby_silence_ms,
            } => write!(
                f,
                "the primary has heard from no other node for {silence_ms} ms (the standby \
                 last heard one {standby_silence_ms} ms ago): it is cut off from the cluster"
            ),
        }
    }
}

/// The signals of one observation that count as failing.
pub fn assess(s: &Settings, obs: &Observation, primary_identity: &str) -> Vec<Failure> {
    let mut failures = Vec::new();
    match &obs.primary_rpc {
        PrimaryRpc::Healthy => {}
        PrimaryRpc::Behind(slots) => failures.push(Failure::PrimaryBehind { slots: *slots }),
        PrimaryRpc::Unreachable(e) => {
            failures.push(Failure::PrimaryRpcUnreachable { error: e.clone() })
        }
        PrimaryRpc::Timeout => failures.push(Failure::PrimaryRpcTimeout),
        PrimaryRpc::Error(e) => failures.push(Failure::PrimaryRpcError { error: e.clone() }),
    }
    if let (Some(p), Some(st)) = (obs.primary_slot, obs.standby_slot) {
        let lag = st.saturating_sub(p);
        if lag > s.max_slot_lag {
            failures.push(Failure::PrimarySlotLag { slots: lag });
        }
    }
    if let Some(v) = obs.votes {
        if v.lag_slots() > s.max_vote_lag_slots {
            failures.push(Failure::VoteLag {
                slots: v.lag_slots(),
            });
        }
    }
    // Once the standby runs the primary identity, its gossip entry is the standby's own.
    let standby_is_primary = obs
        .standby
        .as_ref()
        .is_some_and(|v| v.identity == primary_identity);
    if obs.gossip_present == Some(false) && !standby_is_primary {
        failures.push(Failure::GossipAbsent);
    }
    // Silence counts only against the cluster's view: if the standby hears nobody either,
    // the cluster (or the standby) is what is quiet, and switching would not help.
    if let (Some(silence_ms), Some(standby_silence_ms)) =
        (obs.primary_silence_ms, obs.standby_silence_ms)
    {
        let max = s.max_peer_silence_ms;
        if max > 0 && silence_ms > max && standby_silence_ms <= max && !standby_is_primary {
            failures.push(Failure::PrimaryCutOff {
                silence_ms,
                standby_silence_ms,
            });
        }
    }
    failures
}

/// Why no failover happens now although it might be wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// The primary has not yet been seen healthy since the watchtower started.
    NotArmed,
    /// The standby's RPC does not answer: it cannot take over now.
    StandbyUnavailable,
    /// The standby reports itself behind the cluster (see `--allow-standby-behind`).
    StandbyBehind,
    /// The standby already runs the primary identity (someone failed over already).
    StandbyIsPrimary,
    /// A failover is being carried out.
    InProgress,
    /// This incident was handled; waiting for cooldown and a healthy primary.
    IncidentOpen,
    /// A previous attempt failed; the next one waits for `retry_ms`.
    RetryBackoff,
    /// `max_attempts` attempts failed in this incident; waiting for it to end.
    GaveUp,
}

impl Hold {
    pub fn label(self) -> &'static str {
        match self {
            Hold::NotArmed => "hold_not_armed",
            Hold::StandbyUnavailable => "hold_standby_unavailable",
            Hold::StandbyBehind => "hold_standby_behind",
            Hold::StandbyIsPrimary => "hold_standby_is_primary",
            Hold::InProgress => "hold_in_progress",
            Hold::IncidentOpen => "hold_incident_open",
            Hold::RetryBackoff => "hold_retry_backoff",
            Hold::GaveUp => "hold_gave_up",
        }
    }
}

/// A failover to carry out, with what led to it (for logs, hooks and the audit record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailoverOrder {
    /// The failures of the check that crossed the threshold.
    pub reasons: Vec<Failure>,
    /// Consecutive failing checks so far.
    pub failing_checks: u32,
    /// When the first of them was observed.
    pub first_failure_ms: u64,
    pub vote_lag_slots: Option<u64>,
    pub primary_slot: Option<u64>,
    pub standby_slot: Option<u64>,
    /// 1 for the first attempt in this incident.
    pub attempt: u32,
}

impl FailoverOrder {
    /// The first reason's label (the primary cause).
    pub fn reason(&self) -> &'static str {
        self.reasons.first().map_or("unknown", Failure::label)
    }
}

/// The answer to one observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The primary is healthy.
    Healthy,
    /// Failing checks, not yet enough.
    Suspect {
        failing_checks: u32,
        needed: u32,
        reasons: Vec<Failure>,
    },
    /// Nothing to do now, for this reason; `reasons` are the current failures, if any.
    Hold { why: Hold, reasons: Vec<Failure> },
    /// Run set-identity on the standby now.
    Failover(FailoverOrder),
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Healthy => "healthy",
            Decision::Suspect { .. } => "suspect",
            Decision::Hold { why, .. } => why.label(),
            Decision::Failover(_) => "failover",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting to see the primary healthy once.
    Unarmed,
    /// Counting failing checks.
    Watching,
    /// A failover order is out; waiting for its result.
    Acting,
    /// The incident was handled (or given up on); waiting for it to end.
    Handled { at_ms: u64, gave_up: bool },
}

/// The failover state machine.
#[derive(Clone, Debug)]
pub struct Monitor {
    settings: Settings,
    primary_identity: String,
    phase: Phase,
    failing_checks: u32,
    first_failure_ms: Option<u64>,
    healthy_streak: u32,
    attempts: u32,
    not_before_ms: u64,
}

impl Monitor {
    pub fn new(settings: Settings, primary_identity: impl Into<String>) -> Self {
        Monitor {
            settings,
            primary_identity: primary_identity.into(),
            phase: Phase::Unarmed,
            failing_checks: 0,
            first_failure_ms: None,
            healthy_streak: 0,
            attempts: 0,
            not_before_ms: 0,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// True once the primary has been seen healthy and no incident is open.
    pub fn armed(&self) -> bool {
        self.phase == Phase::Watching
    }

    pub fn failing_checks(&self) -> u32 {
        self.failing_checks
    }

    /// Feeds one check's observation taken at `now_ms`.
    pub fn observe(&mut self, obs: &Observation, now_ms: u64) -> Decision {
        let reasons = assess(&self.settings, obs, &self.primary_identity);
        if reasons.is_empty() {
            self.failing_checks = 0;
            self.first_failure_ms = None;
            self.healthy_streak = self.healthy_streak.saturating_add(1);
        } else {
            self.failing_checks = self.failing_checks.saturating_add(1);
            self.first_failure_ms.get_or_insert(now_ms);
            self.healthy_streak = 0;
        }
        let standby_is_primary = obs
            .standby
            .as_ref()
            .is_some_and(|v| v.identity == self.primary_identity);
        let hold = |why| Decision::Hold {
            why,
            reasons: reasons.clone(),
        };
        match self.phase {
            Phase::Acting => return hold(Hold::InProgress),
            Phase::Unarmed => {
                if !reasons.is_empty() || standby_is_primary || obs.standby.is_none() {
                    return hold(Hold::NotArmed);
                }
                self.phase = Phase::Watching;
                self.attempts = 0;
            }
            Phase::Handled { at_ms, gave_up } => {
                let cooled = now_ms >= at_ms.saturating_add(self.settings.cooldown_ms);
                let recovered = self.healthy_streak >= self.settings.rearm_checks
                    && obs.standby.is_some()
                    && !standby_is_primary;
                if !(cooled && recovered) {
                    return hold(if gave_up {
                        Hold::GaveUp
                    } else {
                        Hold::IncidentOpen
                    });
                }
                self.phase = Phase::Watching;
                self.attempts = 0;
            }
            Phase::Watching => {}
        }
        if reasons.is_empty() {
            // A healthy check also ends a run of failed attempts.
            self.attempts = 0;
            return Decision::Healthy;
        }
        if self.failing_checks < self.settings.unhealthy_checks {
            return Decision::Suspect {
                failing_checks: self.failing_checks,
                needed: self.settings.unhealthy_checks,
                reasons,
            };
        }
        let Some(standby) = &obs.standby else {
            return hold(Hold::StandbyUnavailable);
        };
        if standby_is_primary {
            return hold(Hold::StandbyIsPrimary);
        }
        if !standby.caught_up && !self.settings.allow_standby_behind {
            return hold(Hold::StandbyBehind);
        }
        if now_ms < self.not_before_ms {
            return hold(Hold::RetryBackoff);
        }
        self.attempts += 1;
        self.phase = Phase::Acting;
        Decision::Failover(FailoverOrder {
            reasons,
            failing_checks: self.failing_checks,
            first_failure_ms: self.first_failure_ms.unwrap_or(now_ms),
            vote_lag_slots: obs.votes.map(|v| v.lag_slots()),
            primary_slot: obs.primary_slot,
            standby_slot: obs.standby_slot,
            attempt: self.attempts,
        })
    }

    /// Reports the result of the last [`Decision::Failover`]. `ok` is also true for a
    /// dry run (it stands for the failover that would have happened).
    pub fn failover_finished(&mut self, ok: bool, now_ms: u64) {
        if self.phase != Phase::Acting {
            return;
        }
        self.healthy_streak = 0;
        if ok {
            self.phase = Phase::Handled {
                at_ms: now_ms,
                gave_up: false,
            };
        } else if self.attempts >= self.settings.max_attempts {
            self.phase = Phase::Handled {
                at_ms: now_ms,
                gave_up: true,
            };
        } else {
            self.phase = Phase::Watching;
            self.not_before_ms = now_ms.saturating_add(self.settings.retry_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = "Primary1111";

    fn healthy() -> Observation {
        Observation {
            primary_rpc: PrimaryRpc::Healthy,
            primary_slot: Some(100),
            standby_slot: Some(100),
            standby: Some(StandbyView {
                identity: "Standby2222".into(),
                caught_up: true,
            }),
            votes: Some(VoteView {
                primary_last_vote: 99,
                cluster_last_vote: 99,
            }),
            gossip_present: Some(true),
            primary_silence_ms: Some(120),
            standby_silence_ms: Some(80),
        }
    }

    fn killed() -> Observation {
        Observation {
            primary_rpc: PrimaryRpc::Unreachable("connection refused".into()),
            primary_slot: None,
            ..healthy()
        }
    }

    fn frozen() -> Observation {
        Observation {
            primary_rpc: PrimaryRpc::Timeout,
            primary_slot: None,
            ..healthy()
        }
    }

    fn settings() -> Settings {
        Settings {
            cooldown_ms: 10_000,
            rearm_checks: 3,
            ..Settings::default()
        }
    }

    /// Feeds `obs` at `t`, `t+200`, ... and returns the decisions.
    fn feed(m: &mut Monitor, obs: &Observation, t: &mut u64, n: usize) -> Vec<Decision> {
        (0..n)
            .map(|_| {
                *t += 200;
                m.observe(obs, *t)
            })
            .collect()
    }

    fn armed_monitor(t: &mut u64) -> Monitor {
        let mut m = Monitor::new(settings(), PRIMARY);
        assert_eq!(m.observe(&healthy(), *t), Decision::Healthy);
        assert!(m.armed());
        m
    }

    fn count_failovers(d: &[Decision]) -> usize {
        d.iter()
            .filter(|d| matches!(d, Decision::Failover(_)))
            .count()
    }

    #[test]
    fn fails_over_after_n_consecutive_failures_exactly_once() {
        let mut t = 0;
        let mut m = armed_monitor(&mut t);
        let d = feed(&mut m, &killed(), &mut t, 2);
        assert!(matches!(
            d[0],
            Decision::Suspect {
                failing_checks: 1,
                needed: 3,
                ..
            }
        ));
        assert!(matches!(
            d[1],
            Decision::Suspect {
                failing_checks: 2,
                ..
            }
        ));
        let d = m.observe(&killed(), t + 200);
        let Decision::Failover(order) = d else {
            panic!("{d:?}")
        };
        assert_eq!(order.reason(), "primary_rpc_unreachable");
        assert_eq!(order.failing_checks, 3);
        assert_eq!(order.first_failure_ms, 200);
        assert_eq!(order.attempt, 1);
        // While acting, and after success, no second order for the same incident.
        t += 200;
        assert!(matches!(
            m.observe(&killed(), t + 200),
            Decision::Hold {
                why: Hold::InProgress,
                ..
            }
        ));
        m.failover_finished(true, t + 300);
        let d = feed(&mut m, &killed(), &mut t, 200);
        assert_eq!(count_failovers(&d), 0);
        assert!(d.iter().all(|d| matches!(
            d,
            Decision::Hold {
                why: Hold::IncidentOpen,
                ..
            }
        )));
    }

    #[test]
    fn one_healthy_check_resets_the_count() {
        let mut t = 0;
        let mut m = armed_monitor(&mut t);
        for _ in 0..10 {
            let d = feed(&mut m, &frozen(), &mut t, 2);
            assert_eq!(count_failovers(&d), 0);
            assert_eq!(feed(&mut m, &healthy(), &mut t, 1)[0], Decision::Healthy);
        }
    }

    #[test]
    fn not_armed_until_the_primary_was_seen_healthy() {
        let mut t = 0;
        let mut m = Monitor::new(settings(), PRIMARY);
        let d = feed(&mut m, &killed(), &mut t, 20);
        assert!(d.iter().all(|d| matches!(
            d,
            Decision::Hold {
                why: Hold::NotArmed,
                ..
            }
        )));
        assert_eq!(feed(&mut m, &healthy(), &mut t, 1)[0], Decision::Healthy);
        let d = feed(&mut m, &killed(), &mut t, 3);
        assert_eq!(count_failovers(&d), 1);
    }

    #[test]
    fn holds_while_the_standby_cannot_take_over_then_acts() {
        let mut t = 0;
        let mut m = armed_monitor(&mut t);
        let gone = Observation {
            standby: None,
            standby_slot: None,
            votes: None,
            gossip_present: None,
            ..killed()
        };
        let d = feed(&mut m, &gone, &mut t, 5);
        assert!(matches!(
            d[4],
            Decision::Hold {
                why: Hold::StandbyUnavailable,
                ..
            }
        ));
        let mut behind = killed();
        behind.standby.as_mut().unwrap().caught_up = false;
        assert!(matches!(
            feed(&mut m, &behind, &mut t, 1)[0],
            Decision::Hold {
                why: Hold::StandbyBehind,
                ..
            }
        ));
        // The count was kept: the first usable check acts.
        assert_eq!(count_failovers(&feed(&mut m, &killed(), &mut t, 1)), 1);
    }

    #[test]
    fn allow_standby_behind_acts_anyway() {
        let mut t = 0;
        let mut m = Monitor::new(
            Settings {
                allow_standby_behind: true,
                ..settings()
            },
            PRIMARY,
        );
        m.observe(&healthy(), t);
        let mut behind = killed();
        behind.standby.as_mut().unwrap().caught_up = false;
        assert_eq!(count_failovers(&feed(&mut m, &behind, &mut t, 3)), 1);
    }

    #[test]
    fn never_acts_when_the_standby_already_runs_the_primary_identity() {
        let mut t = 0;
        let mut m = armed_monitor(&mut t);
        let mut obs = killed();
        obs.standby.as_mut().unwrap().identity = PRIMARY.into();
        let d = feed(&mut m, &obs, &mut t, 50);
        assert_eq!(count_failovers(&d), 0);
        assert!(matches!(
            d[49],
            Decision::Hold {
                why: Hold::StandbyIsPrimary,
                ..
            }
        ));
    }

    #[test]
    fn rearms_only_after_cooldown_and_a_healthy_primary() {
        let mut t = 0;
        let mut m = armed_monitor(&mut t);
        assert_eq!(count_failovers(&feed(&mut m, &killed(), &mut t, 3)), 1);
        m.failover_finished(true, t);
        let done_at = t;
        // The primary comes back healthy at once; the standby still has its identity.
        let mut standby_primary = healthy();
        standby_primary.standby.as_mut().unwrap().identity = PRIMARY.into();
        let d = feed(&mut m, &standby_primary, &mut t, 10);
        assert!(d.iter().all(|d| matches!(
            d,
            Decision::Hold {
                why: Hold::IncidentOpen,
                ..
            }
        )));
        // Healthy, standby back on its own identity, but within the cooldown.
        let d = feed(&mut m, &healthy(), &mut t, 5);
        assert!(t < done_at + 10_000);
        assert!(matches!(
            d[4],
            Decision::Hold {
                why: Hold::IncidentOpen,
                ..
            }
        ));
        t = done_at + 10_000;
        assert_eq!(feed(&mut m, &healthy(), &mut t, 1)[0], Decision::Healthy);
        assert!(m.armed());
        // A new incident fails over again.
        assert_eq!(count_failovers(&feed(&mut m, &frozen(), &mut t, 3)), 1);
    }

    #[test]
    fn rearm_needs_consecutive_healthy_checks() {
        let mut t = 0;
        let mut m = armed_monitor(&mut t);
        feed(&mut m, &killed(), &mut t, 3);
        m.failover_finished(true, t);
        t += 20_000;
        // Flapping: two healthy, one failing, repeatedly: never re-armed.
        for _ in 0..10 {
            let mut d = feed(&mut m, &healthy(), &mut t, 2);
            d.extend(feed(&mut m, &frozen(), &mut t, 1));
            assert!(d.iter().all(|d| matches!(
                d,
                Decision::Hold {
                    why: Hold::IncidentOpen,
                    ..
                }
            )));
        }
    }

    #[test]
    fn failed_attempts_are_retried_with_backoff_then_given_up() {
        let mut t = 0;
        let mut m = armed_monitor(&mut t);
        let mut attempts = Vec::new();
        for _ in 0..100 {
            t += 200;
            if let Decision::Failover(o) = m.observe(&killed(), t) {
                attempts.push((o.attempt, t));
                m.failover_finished(false, t + 50);
            }
        }
        assert_eq!(attempts.len(), 3, "{attempts:?}");
        assert_eq!(
            attempts.iter().map(|a| a.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(attempts[1].1 - attempts[0].1 >= 1_000);
        assert!(matches!(
            m.observe(&killed(), t + 200),
            Decision::Hold {
                why: Hold::GaveUp,
                ..
            }
        ));
    }

    #[test]
    fn slow_signals_alone_trigger_for_a_cut_off_primary() {
        // The primary's RPC still answers (stale but "ok"), the cluster sees no votes.
        let mut t = 0;
        let mut m = armed_monitor(&mut t);
        let cut_off = Observation {
            votes: Some(VoteView {
                primary_last_vote: 50,
                cluster_last_vote: 99,
            }),
            ..healthy()
        };
        let d = feed(&mut m, &cut_off, &mut t, 3);
        let Decision::Failover(o) = &d[2] else {
            panic!("{d:?}")
        };
        assert_eq!(o.reason(), "vote_lag");
        assert_eq!(o.vote_lag_slots, Some(49));
    }

    #[test]
    fn a_silent_primary_whose_rpc_answers_is_cut_off_within_the_silence_bound() {
        // Cut off at t0: the primary answers every probe, but hears nobody; the standby
        // keeps hearing the cluster. Checks every 200 ms.
        let mut t = 0;
        let mut m = armed_monitor(&mut t);
        let t0 = t;
        let mut decided = None;
        for _ in 0..20 {
            t += 200;
            let obs = Observation {
                primary_silence_ms: Some(t - t0),
                ..healthy()
            };
            if let Decision::Failover(o) = m.observe(&obs, t) {
                assert_eq!(o.reason(), "primary_cut_off");
                decided = Some(t - t0);
                break;
            }
        }
        // The first check past the silence bound, then two more.
        let first_past = (Settings::DEFAULT.max_peer_silence_ms / 200 + 1) * 200;
        assert_eq!(decided, Some(first_past + 2 * 200));
    }

    #[test]
    fn silence_does_not_count_when_the_standby_hears_nobody_either_or_it_is_off() {
        let s = Settings::default();
        let quiet_cluster = Observation {
            primary_silence_ms: Some(5_000),
            standby_silence_ms: Some(5_000),
            ..healthy()
        };
        assert!(assess(&s, &quiet_cluster, PRIMARY).is_empty());
        let unknown_standby = Observation {
            primary_silence_ms: Some(5_000),
            standby_silence_ms: None,
            ..healthy()
        };
        assert!(assess(&s, &unknown_standby, PRIMARY).is_empty());
        let at_bound = Observation {
            primary_silence_ms: Some(s.max_peer_silence_ms),
            ..healthy()
        };
        assert!(assess(&s, &at_bound, PRIMARY).is_empty());
        let off = Settings {
            max_peer_silence_ms: 0,
            ..Settings::default()
        };
        let silent = Observation {
            primary_silence_ms: Some(60_000),
            ..healthy()
        };
        assert!(assess(&off, &silent, PRIMARY).is_empty());
        assert_eq!(
            assess(&s, &silent, PRIMARY)
                .iter()
                .map(Failure::label)
                .collect::<Vec<_>>(),
            vec!["primary_cut_off"]
        );
    }

    #[test]
    fn assess_names_every_failing_signal() {
        let s = Settings::default();
        assert!(assess(&s, &healthy(), PRIMARY).is_empty());
        let mut obs = healthy();
        obs.primary_rpc = PrimaryRpc::Behind(Some(12));
        obs.primary_slot = Some(80);
        obs.votes = Some(VoteView {
            primary_last_vote: 10,
            cluster_last_vote: 99,
        });
        obs.gossip_present = Some(false);
        let labels: Vec<_> = assess(&s, &obs, PRIMARY)
            .iter()
            .map(Failure::label)
            .collect();
        assert_eq!(
            labels,
            vec![
                "primary_behind",
                "primary_slot_lag",
                "vote_lag",
                "gossip_absent"
            ]
        );
        // Lags at the threshold are fine; unknown signals never fail a check.
        obs = healthy();
        obs.primary_slot = Some(100 - s.max_slot_lag);
        obs.votes = Some(VoteView {
            primary_last_vote: 99 - s.max_vote_lag_slots,
            cluster_last_vote: 99,
        });
        obs.gossip_present = None;
        obs.standby_slot = Some(100);
        assert!(assess(&s, &obs, PRIMARY).is_empty());
        // Gossip absence is not held against the primary once the standby runs its identity.
        obs.gossip_present = Some(false);
        obs.standby.as_mut().unwrap().identity = PRIMARY.into();
        assert!(assess(&s, &obs, PRIMARY).is_empty());
    }
}
