//! `huione-watchtower`: the failover monitor that runs next to the hot standby.
//!
//! ```text
//! every check_interval:  observe::check ──Observation──► decision::Monitor ──Decision
//! (checks overlap: one starts each interval while earlier ones still wait for answers;
//!  they are judged in the order they started, see run::InOrder)
//!   primary RPC (getHealth, getSlot)                          │
//!   standby + --cluster-rpc (getVoteAccounts, getClusterNodes, getIdentity, getHealth)
//!                                                             ▼ Failover (once per incident)
//!                         action::carry_out: pre-hook → set-identity (admin socket)
//!                                            → audit line → post-hook
//! ```
//!
//! Module map: [`decision`] (the pure state machine: thresholds, hysteresis, cooldown),
//! [`observe`] (probes and reading their answers, over `huione_rpc::client`), [`action`] (hooks, set-identity, audit record), [`metrics`] (Prometheus),
//! [`config`] (flags → plain config), [`run`] (the driver loop).
//!
//! Invariants: the decision logic has no I/O and no clock; every probe, hook and admin
//! call is bounded in time; at most one failover per incident; a dry run never touches
//! the standby.

pub mod action;
pub mod config;
pub mod decision;
pub mod metrics;
pub mod observe;
pub mod run;
