//! Plain settings of one simulation run.

use huione_core::PlantedBug;

/// Per-slot fault probabilities during the fault phase.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRates {
    pub crash: f64,
    pub freeze: f64,
    /// An operator runs set-identity on a standby (the primary may be healthy).
    pub failover: f64,
    /// Both machines of a pair take the identity in the same instant.
    pub dual_takeover: f64,
    pub partition: f64,
    /// The whole tower storage is unreachable.
    pub storage_outage: f64,
    /// One machine cannot reach tower storage (but still reaches the cluster).
    pub storage_cut: f64,
    /// One machine's wall clock steps to a new offset from true time (up to
    /// `MAX_CLOCK_STEP_SLOTS` either way, or back to correct), as a broken NTP would.
    pub clock_step: f64,
    /// Per acquire: storage applies it but the answer is lost (the caller times out).
    pub acquire_answer_lost: f64,
    /// Per acquire: the caller times out, and storage applies it later (a few slots),
    /// guarded as etcd's attempts are (only if the lock has not moved since it was sent).
    pub acquire_late: f64,
    /// Per tower load right after an acquire: the load fails (unavailable).
    pub load_after_acquire_fails: f64,
    /// Per store: storage applies it but the answer is lost.
    pub store_answer_lost: f64,
}

/// The largest clock offset a clock-step fault sets, in slots.
pub const MAX_CLOCK_STEP_SLOTS: u64 = 4;

impl FaultRates {
    pub fn none() -> Self {
        FaultRates {
            crash: 0.0,
            freeze: 0.0,
            failover: 0.0,
            dual_takeover: 0.0,
            partition: 0.0,
            storage_outage: 0.0,
            storage_cut: 0.0,
            clock_step: 0.0,
            acquire_answer_lost: 0.0,
            acquire_late: 0.0,
            load_after_acquire_fails: 0.0,
            store_answer_lost: 0.0,
        }
    }
    /// The mix used by randomized rounds and the benchmark.
    pub fn chaos() -> Self {
        FaultRates {
            crash: 0.02,
            freeze: 0.02,
            failover: 0.02,
            dual_takeover: 0.01,
            partition: 0.02,
            storage_outage: 0.01,
            storage_cut: 0.01,
            clock_step: 0.01,
            acquire_answer_lost: 0.15,
            acquire_late: 0.15,
            load_after_acquire_fails: 0.2,
            store_answer_lost: 0.01,
        }
    }
}

/// Message delivery between machines.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Probability that one message is lost.
    pub loss: f64,
    /// Storage round trip, one way (request or response).
    pub storage_min_ms: u64,
    pub storage_max_ms: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            min_delay_ms: 2,
            max_delay_ms: 30,
            loss: 0.01,
            storage_min_ms: 1,
            storage_max_ms: 4,
        }
    }
}

/// One run. Everything random is derived from `seed`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Staked validators, each with a primary machine.
    pub validators: usize,
    /// How many of them (the first ones) also have a standby machine.
    pub standbys: usize,
    /// Length of the fault phase.
    pub slots: u64,
    /// Most fault-free slots after it before roots must have advanced again.
    pub liveness_slots: u64,
    pub slot_ms: u64,
    pub slots_per_epoch: u64,
    pub faults: FaultRates,
    pub net: NetConfig,
    /// Check PRODUCT.md invariant 1 in the driver (off only to show that the auditor
    /// alone also catches a vote sent before its store).
    pub check_store_before_send: bool,
    /// Each validator's stake (None: 100 or 200 each, drawn from the seed).
    pub stakes: Option<Vec<u64>>,
    /// Overrides the cores' `max_clock_offset_ms` (None: the core's default). Scenarios
    /// set it very high to show that safety does not depend on the clock guard.
    pub max_clock_offset_ms: Option<u64>,
    /// The watchtowers' thresholds (the shipped defaults unless a scenario changes them).
    pub watchtower: huione_watchtower::decision::Settings,
    #[doc(hidden)]
    pub planted_bug: Option<PlantedBug>,
}

impl SimConfig {
    /// A randomized round: chaos faults, then a liveness phase.
    pub fn random(seed: u64, slots: u64) -> Self {
        SimConfig {
            seed,
            validators: 4,
            standbys: 2,
            slots,
            liveness_slots: 1200,
            slot_ms: 100,
            slots_per_epoch: 64,
            faults: FaultRates::chaos(),
            net: NetConfig::default(),
            check_store_before_send: true,
            stakes: None,
            max_clock_offset_ms: None,
            watchtower: Default::default(),
            planted_bug: None,
        }
    }

    /// A quiet cluster for hand-written scenarios: no random faults, no loss.
    pub fn scenario(validators: usize, standbys: usize) -> Self {
        SimConfig {
            seed: 1,
            validators,
            standbys,
            slots: 0,
            liveness_slots: 0,
            slot_ms: 100,
            slots_per_epoch: 64,
            faults: FaultRates::none(),
            net: NetConfig {
                loss: 0.0,
                ..NetConfig::default()
            },
            check_store_before_send: true,
            stakes: None,
            max_clock_offset_ms: None,
            watchtower: Default::default(),
            planted_bug: None,
        }
    }

    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        let features = if self.planted_bug.is_some() {
            " --features planted-bugs"
        } else {
            ""
        };
        let mut cmd = format!(
            "cargo run -p huione-sim --release{features} -- --seed {} --slots {} --validators {} --standbys {} --liveness-slots {}",
            self.seed, self.slots, self.validators, self.standbys, self.liveness_slots
        );
        if self.faults == FaultRates::none() {
            cmd.push_str(" --no-faults");
        }
        if let Some(bug) = self.planted_bug {
            cmd.push_str(&format!(" --planted-bug {}", bug_name(bug)));
        }
        cmd
    }
}

pub fn bug_name(bug: PlantedBug) -> &'static str {
    match bug {
        PlantedBug::SendBeforeStore => "send-before-store",
        PlantedBug::IgnoreStoredTower => "ignore-stored-tower",
        PlantedBug::FloorFromClock => "floor-from-clock",
    }
}

pub fn parse_bug(name: &str) -> Option<PlantedBug> {
    match name {
        "send-before-store" => Some(PlantedBug::SendBeforeStore),
        "ignore-stored-tower" => Some(PlantedBug::IgnoreStoredTower),
        "floor-from-clock" => Some(PlantedBug::FloorFromClock),
        _ => None,
    }
}
