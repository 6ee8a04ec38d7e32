//! Genesis (the cluster's validators, stakes and timing) and the leader schedule.
//!
//! Stakes are fixed at genesis (there is no stake program), so the schedule of every
//! epoch is a pure function of the genesis and the epoch number: each group of
//! [`LEADER_SLOTS`] consecutive slots gets one leader, drawn with probability
//! proportional to stake from a PRNG seeded by `sha256(genesis hash || epoch)`.

use std::collections::BTreeMap;

use huione_keys::Pubkey;
use huione_tower::Slot;
use serde::{Deserialize, Serialize};

use crate::hash::Hash;

/// Consecutive slots given to one leader.
pub const LEADER_SLOTS: u64 = 4;
/// Validators a genesis may list; a bound on everything that is sized by it.
pub const MAX_VALIDATORS: usize = 1024;

/// A staked validator at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisValidator {
    /// Node identity: leads slots and signs blocks.
    pub identity: Pubkey,
    /// The vote account the stake is delegated to.
    pub vote_account: Pubkey,
    /// Key that must sign this account's votes (in the failover setup: the identity).
    pub authorized_voter: Pubkey,
    pub stake: u64,
}

/// Why a genesis is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis has no validators with stake; add at least one staked validator")]
    NoStake,
    #[error("genesis lists {0} validators, at most {MAX_VALIDATORS} are supported")]
    TooManyValidators(usize),
    #[error("vote account {0} is listed twice in genesis; each validator needs its own")]
    DuplicateVoteAccount(Pubkey),
    #[error("slot duration must be at least 1 ms")]
    ZeroSlotDuration,
    #[error(
        "slots per epoch ({0}) must be a positive multiple of {LEADER_SLOTS} (one leader \
         group never spans two epochs)"
    )]
    BadEpochLength(u64),
}

/// The cluster's starting state. Its `hash` is the parent hash of the first blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub validators: Vec<GenesisValidator>,
    pub slot_duration_ms: u64,
    pub slots_per_epoch: u64,
    /// Unix time (ms) at which slot 0 starts.
    pub start_time_ms: u64,
    pub hash: Hash,
}

impl Genesis {
    /// Validates the parameters and computes the genesis hash.
    pub fn new(
        validators: Vec<GenesisValidator>,
        slot_duration_ms: u64,
        slots_per_epoch: u64,
        start_time_ms: u64,
    ) -> Result<Self, GenesisError> {
        if validators.len() > MAX_VALIDATORS {
            return Err(GenesisError::TooManyValidators(validators.len()));
        }
        if validators.iter().map(|v| v.stake as u128).sum::<u128>() == 0 {
            return Err(GenesisError::NoStake);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = validators.iter().find(|v| !seen.insert(v.vote_account)) {
            return Err(GenesisError::DuplicateVoteAccount(dup.vote_account));
        }
        if slot_duration_ms == 0 {
            return Err(GenesisError::ZeroSlotDuration);
        }
        if slots_per_epoch == 0 || !slots_per_epoch.is_multiple_of(LEADER_SLOTS) {
            return Err(GenesisError::BadEpochLength(slots_per_epoch));
        }
        let mut g = Genesis {
            validators,
            slot_duration_ms,
            slots_per_epoch,
            start_time_ms,
            hash: Hash::default(),
        };
        g.hash = g.compute_hash();
        Ok(g)
    }

    fn compute_hash(&self) -> Hash {
        let mut body = serde_json::to_vec(&self.validators).expect("validators serialize");
        for n in [
            self.slot_duration_ms,
            self.slots_per_epoch,
            self.start_time_ms,
        ] {
            body.extend_from_slice(&n.to_le_bytes());
        }
        Hash::digest(&[b"huione-genesis", &body])
    }

    pub fn total_stake(&self) -> u64 {
        self.validators.iter().map(|v| v.stake).sum()
    }

    /// The slot in progress at unix time `now_ms` (slot 0 before the start).
    pub fn slot_at(&self, now_ms: u64) -> Slot {
        now_ms.saturating_sub(self.start_time_ms) / self.slot_duration_ms
    }

    /// Unix time (ms) at which `slot` starts.
    pub fn slot_start_ms(&self, slot: Slot) -> u64 {
        self.start_time_ms
            .saturating_add(slot.saturating_mul(self.slot_duration_ms))
    }

    pub fn epoch_of(&self, slot: Slot) -> u64 {
        slot / self.slots_per_epoch
    }

    pub fn validator_by_vote_account(&self, vote_account: &Pubkey) -> Option<&GenesisValidator> {
        self.validators
            .iter()
            .find(|v| v.vote_account == *vote_account)
    }
}

/// The leaders of one epoch, one per group of [`LEADER_SLOTS`] slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderSchedule {
    pub epoch: u64,
    first_slot: Slot,
    leaders: Vec<Pubkey>,
}

impl LeaderSchedule {
    /// The deterministic, stake-weighted schedule of `epoch`.
    pub fn compute(genesis: &Genesis, epoch: u64) -> Self {
        let seed = Hash::digest(&[
            b"huione-leader-schedule",
            &genesis.hash.0,
            &epoch.to_le_bytes(),
        ]);
        let mut rng = SplitMix64(u64::from_le_bytes(seed.0[..8].try_into().expect("8 bytes")));
        let total = genesis.total_stake();
        let groups = genesis.slots_per_epoch / LEADER_SLOTS;
        let leaders = (0..groups)
            .map(|_| pick_by_stake(&genesis.validators, rng.next() % total))
            .collect();
        LeaderSchedule {
            epoch,
            first_slot: epoch * genesis.slots_per_epoch,
            leaders,
        }
    }

    /// The leader of `slot`, if `slot` is in this epoch.
    pub fn leader_at(&self, slot: Slot) -> Option<Pubkey> {
        let offset = slot.checked_sub(self.first_slot)?;
        self.leaders.get((offset / LEADER_SLOTS) as usize).copied()
    }
}

fn pick_by_stake(validators: &[GenesisValidator], mut point: u64) -> Pubkey {
    for v in validators {
        if point < v.stake {
            return v.identity;
        }
        point -= v.stake;
    }
    // Unreachable when point < total stake; fall back to the last staked validator.
    validators
        .iter()
        .rev()
        .find(|v| v.stake > 0)
        .map_or_else(Pubkey::default, |v| v.identity)
}

/// A few epochs' schedules, computed on demand. Bounded: replay never looks further than
/// one epoch back or ahead.
#[derive(Debug, Default)]
pub struct ScheduleCache {
    epochs: BTreeMap<u64, LeaderSchedule>,
}

impl ScheduleCache {
    const MAX_EPOCHS: usize = 4;

    pub fn leader_at(&mut self, genesis: &Genesis, slot: Slot) -> Pubkey {
        let epoch = genesis.epoch_of(slot);
        if !self.epochs.contains_key(&epoch) {
            if self.epochs.len() >= Self::MAX_EPOCHS {
                self.epochs.pop_first();
            }
            self.epochs
                .insert(epoch, LeaderSchedule::compute(genesis, epoch));
        }
        self.epochs[&epoch]
            .leader_at(slot)
            .expect("the schedule covers its own epoch")
    }
}

/// splitmix64: tiny, fast and fully determined by its seed.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genesis(stakes: &[u64]) -> Genesis {
        let validators = stakes
            .iter()
            .enumerate()
            .map(|(i, &stake)| GenesisValidator {
                identity: Pubkey::from_seed_byte(i as u8 + 1),
                vote_account: Pubkey::from_seed_byte(i as u8 + 101),
                authorized_voter: Pubkey::from_seed_byte(i as u8 + 1),
                stake,
            })
            .collect();
        Genesis::new(validators, 400, 64, 0).unwrap()
    }

    #[test]
    fn schedule_is_deterministic_grouped_and_stake_weighted() {
        let g = genesis(&[1, 3, 0]);
        let a = LeaderSchedule::compute(&g, 7);
        assert_eq!(a, LeaderSchedule::compute(&g, 7));
        assert_ne!(a.leaders, LeaderSchedule::compute(&g, 8).leaders);
        for slot in (7 * 64..8 * 64).step_by(4) {
            let l = a.leader_at(slot).unwrap();
            for s in slot..slot + 4 {
                assert_eq!(a.leader_at(s), Some(l));
            }
        }
        assert_eq!(a.leader_at(8 * 64), None);
        let mut counts = [0u32; 3];
        for epoch in 0..200 {
            for l in LeaderSchedule::compute(&g, epoch).leaders {
                counts[l.0[0] as usize - 1] += 1;
            }
        }
        assert_eq!(counts[2], 0, "zero stake never leads");
        let share = counts[1] as f64 / (counts[0] + counts[1]) as f64;
        assert!((0.70..0.80).contains(&share), "stake 3 of 4 got {share}");
    }

    #[test]
    fn genesis_validation() {
        let v = genesis(&[1]).validators;
        assert_eq!(Genesis::new(vec![], 400, 64, 0), Err(GenesisError::NoStake));
        assert_eq!(
            Genesis::new(v.clone(), 400, 10, 0),
            Err(GenesisError::BadEpochLength(10))
        );
        assert_eq!(
            Genesis::new(v.clone(), 0, 64, 0),
            Err(GenesisError::ZeroSlotDuration)
        );
        let dup = vec![v[0].clone(), v[0].clone()];
        assert!(matches!(
            Genesis::new(dup, 400, 64, 0),
            Err(GenesisError::DuplicateVoteAccount(_))
        ));
        let g = genesis(&[1]);
        assert_eq!(g.slot_at(0), 0);
        assert_eq!(g.slot_at(799), 1);
        assert_eq!(g.slot_start_ms(3), 1200);
        assert_ne!(g.hash, genesis(&[2]).hash);
    }
}
