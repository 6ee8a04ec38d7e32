//! Genesis creation: `IDENTITY:VOTE:STAKE` validator specs (each key a base58 pubkey or a
//! keypair file), validation with messages that say what to fix, and writing the JSON file
//! the validators load with `--genesis`.
//!
//! In the failover setup the identity is the vote account's authorized voter, so a
//! secondary started with `--authorized-voter <primary identity keypair>` can vote for the
//! account after `set-identity`.

use std::path::{Path, PathBuf};

use huione_core::{Genesis, GenesisError, GenesisValidator, LEADER_SLOTS};
use huione_keys::{KeyError, Keypair, Pubkey};

/// Default slot length, as Solana's.
pub const DEFAULT_SLOT_MS: u64 = 400;
/// Default epoch length in slots (a multiple of [`LEADER_SLOTS`]).
pub const DEFAULT_SLOTS_PER_EPOCH: u64 = 432;
/// Default delay from creating the genesis to slot 0, so that nodes can start first.
pub const DEFAULT_START_IN_MS: u64 = 3_000;
/// Largest genesis file we read.
const MAX_GENESIS_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why a genesis could not be made, read or written. Each names the input and the fix.
#[derive(Debug, thiserror::Error)]
pub enum GenesisToolError {
    #[error(
        "validator spec {spec:?} is malformed: {reason}. Expected IDENTITY:VOTE_ACCOUNT:STAKE, \
         each key a base58 pubkey or a keypair file, e.g. \
         validator-keypair.json:vote-account-keypair.json:1000000000"
    )]
    BadSpec { spec: String, reason: String },
    #[error("{what} {input:?} is neither an existing keypair file nor a base58 pubkey ({reason})")]
    NotAKey {
        what: &'static str,
        input: String,
        reason: String,
    },
    #[error("{what} {input:?}: {source}")]
    BadKeyFile {
        what: &'static str,
        input: String,
        source: KeyError,
    },
    #[error(
        "identity {0} is listed twice; each validator needs its own identity (a hot standby \
         is not listed: it runs with --authorized-voter and no stake of its own)"
    )]
    DuplicateIdentity(Pubkey),
    #[error("the total stake overflows a u64; use smaller stakes")]
    StakeOverflow,
    #[error("slots per epoch ({0}) must be a positive multiple of {LEADER_SLOTS}")]
    BadEpochLength(u64),
    #[error("invalid genesis: {0}")]
    Invalid(#[from] GenesisError),
    #[error("{path} already exists; refusing to overwrite a genesis (pass --force to replace it)")]
    Exists { path: PathBuf },
    #[error("cannot write genesis {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read genesis {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a huione genesis: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// The cluster's timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenesisParams {
    pub slot_ms: u64,
    pub slots_per_epoch: u64,
    /// Unix time (ms) of the start of slot 0.
    pub start_time_ms: u64,
}

impl GenesisParams {
    /// Default timing with slot 0 starting `start_in_ms` from now.
    pub fn starting_in(start_in_ms: u64) -> Self {
        GenesisParams {
            slot_ms: DEFAULT_SLOT_MS,
            slots_per_epoch: DEFAULT_SLOTS_PER_EPOCH,
            start_time_ms: huione_os::clock::now_ms().saturating_add(start_in_ms),
        }
    }
}

/// Resolves a key argument: an existing file is read as a keypair (and must be one); any
/// other string must be a base58 pubkey. `what` names the argument in errors.
pub fn resolve_pubkey(input: &str, what: &'static str) -> Result<Pubkey, GenesisToolError> {
    let path = Path::new(input);
    if path.is_file() {
        return Keypair::read_file(path)
            .map(|k| k.pubkey())
            .map_err(|source| GenesisToolError::BadKeyFile {
                what,
                input: input.to_string(),
                source,
            });
    }
    input
        .parse::<Pubkey>()
        .map_err(|e| GenesisToolError::NotAKey {
            what,
            input: input.to_string(),
            reason: match e {
                KeyError::BadPubkey { reason, .. } => {
                    format!("no such file, and not a pubkey: {reason}")
                }
                other => other.to_string(),
            },
        })
}

/// Parses `IDENTITY:VOTE_ACCOUNT:STAKE` into a genesis validator whose authorized voter is
/// its identity. The stake is the text after the last `:`, the vote account the text
/// before it up to the previous `:`; the identity (first part) may itself contain `:`.
pub fn parse_validator_spec(spec: &str) -> Result<GenesisValidator, GenesisToolError> {
    let bad = |reason: &str| GenesisToolError::BadSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (keys, stake) = spec
        .rsplit_once(':')
        .ok_or_else(|| bad("no ':' separators"))?;
    let (identity, vote) = keys
        .rsplit_once(':')
        .ok_or_else(|| bad("it has two parts, expected three"))?;
    if identity.is_empty() || vote.is_empty() || stake.is_empty() {
        return Err(bad("a part is empty"));
    }
    let stake: u64 = stake.trim().parse().map_err(|_| {
        bad(&format!(
            "stake {stake:?} is not a whole number of lamports"
        ))
    })?;
    let identity = resolve_pubkey(identity, "identity")?;
    let vote_account = resolve_pubkey(vote, "vote account")?;
    if identity == vote_account {
        return Err(bad(
            "identity and vote account are the same key; create a separate vote account \
             keypair (huione-keygen new -o vote-account-keypair.json)",
        ));
    }
    Ok(GenesisValidator {
        identity,
        vote_account,
        authorized_voter: identity,
        stake,
    })
}

/// Checks what the core does not (duplicate identities, stake overflow, epoch length) and
/// builds the genesis.
pub fn build_genesis(
    validators: Vec<GenesisValidator>,
    params: &GenesisParams,
) -> Result<Genesis, GenesisToolError> {
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = validators.iter().find(|v| !seen.insert(v.identity)) {
        return Err(GenesisToolError::DuplicateIdentity(dup.identity));
    }
    validators
        .iter()
        .try_fold(0u64, |sum, v| sum.checked_add(v.stake))
        .ok_or(GenesisToolError::StakeOverflow)?;
    if params.slots_per_epoch == 0 || !params.slots_per_epoch.is_multiple_of(LEADER_SLOTS) {
        return Err(GenesisToolError::BadEpochLength(params.slots_per_epoch));
    }
    Ok(Genesis::new(
        validators,
        params.slot_ms,
        params.slots_per_epoch,
        params.start_time_ms,
    )?)
}

/// Writes `genesis` as pretty JSON to `path` (atomically). Refuses to replace an existing
/// file unless `force`.
pub fn write_genesis(path: &Path, genesis: &Genesis, force: bool) -> Result<(), GenesisToolError> {
    if !force && path.exists() {
        return Err(GenesisToolError::Exists {
            path: path.to_path_buf(),
        });
    }
    let mut json = serde_json::to_vec_pretty(genesis).expect("a genesis serializes");
    json.push(b'\n');
    huione_os::fs::write_atomic(path, &json).map_err(|source| GenesisToolError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a genesis file and checks that it is valid and that its hash matches its content.
pub fn read_genesis(path: &Path) -> Result<Genesis, GenesisToolError> {
    let read_err = |source| GenesisToolError::Read {
        path: path.to_path_buf(),
        source,
    };
    let malformed = |reason: String| GenesisToolError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_GENESIS_FILE_BYTES {
        return Err(malformed(format!("the file is {len} bytes, far too large")));
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let g: Genesis = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
    let rebuilt = Genesis::new(
        g.validators.clone(),
        g.slot_duration_ms,
        g.slots_per_epoch,
        g.start_time_ms,
    )
    .map_err(|e| malformed(e.to_string()))?;
    if rebuilt.hash != g.hash {
        return Err(malformed(format!(
            "its hash {} does not match its content ({}); the file was edited by hand — \
             create a new one with huione-genesis",
            g.hash, rebuilt.hash
        )));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, name: &str, seed: u8) -> (String, Pubkey) {
        let k = Keypair::from_secret(&[seed; 32]);
        let path = dir.join(name);
        k.write_file(&path, false).unwrap();
        (path.to_str().unwrap().to_string(), k.pubkey())
    }

    fn params() -> GenesisParams {
        GenesisParams {
            slot_ms: 400,
            slots_per_epoch: 32,
            start_time_ms: 1_000,
        }
    }

    #[test]
    fn spec_accepts_files_and_pubkeys_and_sets_the_identity_as_voter() {
        let dir = tempfile::tempdir().unwrap();
        let (id_file, id) = key_file(dir.path(), "id.json", 1);
        let vote = Keypair::from_secret(&[2; 32]).pubkey();
        let v = parse_validator_spec(&format!("{id_file}:{vote}:500")).unwrap();
        assert_eq!((v.identity, v.vote_account, v.stake), (id, vote, 500));
        assert_eq!(v.authorized_voter, id);
        let v = parse_validator_spec(&format!("{id}:{vote}:0")).unwrap();
        assert_eq!(v.identity, id);
    }

    #[test]
    fn spec_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let (id_file, id) = key_file(dir.path(), "id.json", 1);
        let (vote_file, _) = key_file(dir.path(), "vote.json", 2);
        let junk = dir.path().join("junk.json");
        std::fs::write(&junk, "not a key").unwrap();
        let cases = [
            (format!("{id}"), "no ':'"),
            (format!("{id}:5"), "two parts"),
            (format!("{id_file}:{vote_file}:lots"), "not a whole number"),
            (format!("{id_file}:{vote_file}:-1"), "not a whole number"),
            (
                format!("nope.json:{vote_file}:1"),
                "identity \"nope.json\" is neither",
            ),
            (format!("{id_file}:{}:1", junk.display()), "not a keypair"),
            (format!("{id_file}:{id}:1"), "same key"),
            (format!(":{vote_file}:1"), "empty"),
        ];
        for (spec, want) in cases {
            let err = parse_validator_spec(&spec).unwrap_err().to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn build_checks_duplicates_overflow_and_epoch_length() {
        let v = |id: u8, vote: u8, stake: u64| GenesisValidator {
            identity: Pubkey::from_seed_byte(id),
            vote_account: Pubkey::from_seed_byte(vote),
            authorized_voter: Pubkey::from_seed_byte(id),
            stake,
        };
        let g = build_genesis(vec![v(1, 11, 5), v(2, 12, 5)], &params()).unwrap();
        assert_eq!(g.total_stake(), 10);
        assert!(matches!(
            build_genesis(vec![v(1, 11, 5), v(1, 12, 5)], &params()),
            Err(GenesisToolError::DuplicateIdentity(_))
        ));
        assert!(matches!(
            build_genesis(vec![v(1, 11, u64::MAX), v(2, 12, 1)], &params()),
            Err(GenesisToolError::StakeOverflow)
        ));
        let odd = GenesisParams {
            slots_per_epoch: 30,
            ..params()
        };
        assert!(matches!(
            build_genesis(vec![v(1, 11, 5)], &odd),
            Err(GenesisToolError::BadEpochLength(30))
        ));
        assert!(matches!(
            build_genesis(vec![v(1, 11, 0)], &params()),
            Err(GenesisToolError::Invalid(GenesisError::NoStake))
        ));
    }

    #[test]
    fn write_then_read_round_trips_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("genesis.json");
        let v = GenesisValidator {
            identity: Pubkey::from_seed_byte(1),
            vote_account: Pubkey::from_seed_byte(2),
            authorized_voter: Pubkey::from_seed_byte(1),
            stake: 7,
        };
        let g = build_genesis(vec![v], &params()).unwrap();
        write_genesis(&path, &g, false).unwrap();
        assert_eq!(read_genesis(&path).unwrap(), g);
        assert!(matches!(
            write_genesis(&path, &g, false),
            Err(GenesisToolError::Exists { .. })
        ));
        write_genesis(&path, &g, true).unwrap();
        let edited = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"stake\": 7", "\"stake\": 8");
        std::fs::write(&path, edited).unwrap();
        let err = read_genesis(&path).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
    }
}
