//! Renders huione blocks and their votes in the shapes of Solana's `getBlock`: a vote
//! becomes a legacy Solana transaction with one Vote-program instruction, shown in any of
//! Solana's encodings (json, jsonParsed, base58, base64) and detail levels.

use base64::Engine;
use huione_keys::Pubkey;
use serde_json::{json, Value};

use crate::snapshot::{BlockInfo, VoteTransaction};

/// `Vote111111111111111111111111111111111111111`
pub const VOTE_PROGRAM_ID: &str = "Vote111111111111111111111111111111111111111";
/// `SysvarS1otHashes111111111111111111111111111`
pub const SYSVAR_SLOT_HASHES_ID: &str = "SysvarS1otHashes111111111111111111111111111";
/// `SysvarC1ock11111111111111111111111111111111`
pub const SYSVAR_CLOCK_ID: &str = "SysvarC1ock11111111111111111111111111111111";

/// How transactions are encoded (`encoding` of `getBlock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    JsonParsed,
    Base58,
    Base64,
    /// Deprecated alias of base58 that returns a bare string.
    Binary,
}

impl Encoding {
    pub fn parse(s: &str) -> Option<Encoding> {
        Some(match s {
            "json" => Encoding::Json,
            "jsonParsed" => Encoding::JsonParsed,
            "base58" => Encoding::Base58,
            "base64" => Encoding::Base64,
            "binary" => Encoding::Binary,
            _ => return None,
        })
    }
}

/// How much of each transaction to show (`transactionDetails`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionDetails {
    Full,
    Signatures,
    None,
    Accounts,
}

impl TransactionDetails {
    pub fn parse(s: &str) -> Option<TransactionDetails> {
        Some(match s {
            "full" => TransactionDetails::Full,
            "signatures" => TransactionDetails::Signatures,
            "none" => TransactionDetails::None,
            "accounts" => TransactionDetails::Accounts,
            _ => return None,
        })
    }
}

/// The options of one `getBlock` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockOptions {
    pub encoding: Encoding,
    pub details: TransactionDetails,
    pub rewards: bool,
    /// When set, each transaction carries `"version": "legacy"`.
    pub max_supported_transaction_version: Option<u8>,
}

impl Default for BlockOptions {
    fn default() -> Self {
        BlockOptions {
            encoding: Encoding::Json,
            details: TransactionDetails::Full,
            rewards: true,
            max_supported_transaction_version: None,
        }
    }
}

/// A vote compiled into Solana's legacy message layout.
struct CompiledVote {
    /// Signer-writable, then writable, then read-only accounts.
    keys: Vec<Pubkey>,
    num_readonly_unsigned: u8,
    /// Indexes into `keys`: vote account, SlotHashes, Clock, authorized voter.
    ix_accounts: Vec<u8>,
    program_index: u8,
    data: Vec<u8>,
}

fn well_known(id: &str) -> Pubkey {
    id.parse().expect("well-known ids are valid base58")
}

fn compile(vote: &VoteTransaction) -> CompiledVote {
    let mut keys = vec![vote.authorized_voter];
    if vote.vote_account != vote.authorized_voter {
        keys.push(vote.vote_account);
    }
    keys.push(well_known(SYSVAR_SLOT_HASHES_ID));
    keys.push(well_known(SYSVAR_CLOCK_ID));
    keys.push(well_known(VOTE_PROGRAM_ID));
    let index = |k: &Pubkey| keys.iter().position(|x| x == k).expect("key present") as u8;
    let ix_accounts = vec![
        index(&vote.vote_account),
        index(&well_known(SYSVAR_SLOT_HASHES_ID)),
        index(&well_known(SYSVAR_CLOCK_ID)),
        index(&vote.authorized_voter),
    ];
    let program_index = index(&well_known(VOTE_PROGRAM_ID));
    CompiledVote {
        num_readonly_unsigned: 3,
        ix_accounts,
        program_index,
        data: vote_instruction_data(vote),
        keys,
    }
}

/// Solana's bincode encoding of `VoteInstruction::Vote(Vote { slots, hash, timestamp })`.
pub fn vote_instruction_data(vote: &VoteTransaction) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 8 + vote.slots.len() * 8 + 32 + 9);
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(vote.slots.len() as u64).to_le_bytes());
    for s in &vote.slots {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(&vote.hash.0);
    match vote.timestamp {
        Some(t) => {
            out.push(1);
            out.extend_from_slice(&t.to_le_bytes());
        }
        None => out.push(0),
    }
    out
}

fn short_vec_len(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len & 0x7f) as u8;
        len >>= 7;
        if len != 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// The vote in Solana's legacy transaction wire format.
pub fn vote_transaction_bytes(vote: &VoteTransaction) -> Vec<u8> {
    let c = compile(vote);
    let mut out = Vec::with_capacity(256);
    short_vec_len(&mut out, 1);
    out.extend_from_slice(&vote.signature.0);
    out.extend_from_slice(&[1, 0, c.num_readonly_unsigned]);
    short_vec_len(&mut out, c.keys.len());
    for k in &c.keys {
        out.extend_from_slice(k.as_bytes());
    }
    out.extend_from_slice(&vote.recent_blockhash.0);
    short_vec_len(&mut out, 1);
    out.push(c.program_index);
    short_vec_len(&mut out, c.ix_accounts.len());
    out.extend_from_slice(&c.ix_accounts);
    short_vec_len(&mut out, c.data.len());
    out.extend_from_slice(&c.data);
    out
}

fn is_writable(c: &CompiledVote, i: usize) -> bool {
    i < c.keys.len() - c.num_readonly_unsigned as usize
}

fn parsed_keys(c: &CompiledVote) -> Value {
    let keys: Vec<Value> = c
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            json!({
                "pubkey": k.to_string(),
                "writable": is_writable(c, i),
                "signer": i == 0,
                "source": "transaction",
            })
        })
        .collect();
    Value::Array(keys)
}

fn meta(vote: &VoteTransaction, c: &CompiledVote, details: TransactionDetails) -> Value {
    // huione keeps no lamport balances per account; zeros keep the arrays the length
    // that clients index by.
    let zeros = vec![0u64; c.keys.len()];
    if details == TransactionDetails::Accounts {
        return json!({
            "err": null,
            "status": { "Ok": null },
            "fee": vote.fee,
            "preBalances": zeros,
            "postBalances": zeros,
        });
    }
    json!({
        "err": null,
        "status": { "Ok": null },
        "fee": vote.fee,
        "preBalances": zeros,
        "postBalances": zeros,
        "innerInstructions": [],
        "logMessages": [],
        "preTokenBalances": [],
        "postTokenBalances": [],
        "rewards": [],
        "loadedAddresses": { "writable": [], "readonly": [] },
    })
}

fn encoded_transaction(vote: &VoteTransaction, c: &CompiledVote, encoding: Encoding) -> Value {
    let data_b58 = bs58::encode(&c.data).into_string();
    match encoding {
        Encoding::Json => json!({
            "signatures": [vote.signature.to_string()],
            "message": {
                "header": {
                    "numRequiredSignatures": 1,
                    "numReadonlySignedAccounts": 0,
                    "numReadonlyUnsignedAccounts": c.num_readonly_unsigned,
                },
                "accountKeys": c.keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                "recentBlockhash": vote.recent_blockhash.to_string(),
                "instructions": [{
                    "programIdIndex": c.program_index,
                    "accounts": c.ix_accounts,
                    "data": data_b58,
                    "stackHeight": null,
                }],
            },
        }),
        Encoding::JsonParsed => json!({
            "signatures": [vote.signature.to_string()],
            "message": {
                "accountKeys": parsed_keys(c),
                "recentBlockhash": vote.recent_blockhash.to_string(),
                "instructions": [{
                    "programId": VOTE_PROGRAM_ID,
                    "accounts": c.ix_accounts.iter()
                        .map(|i| c.keys[*i as usize].to_string())
                        .collect::<Vec<_>>(),
                    "data": data_b58,
                    "stackHeight": null,
                }],
            },
        }),
        Encoding::Base58 => json!([
            bs58::encode(vote_transaction_bytes(vote)).into_string(),
            "base58"
        ]),
        Encoding::Base64 => json!([
            base64::engine::general_purpose::STANDARD.encode(vote_transaction_bytes(vote)),
            "base64"
        ]),
        Encoding::Binary => json!(bs58::encode(vote_transaction_bytes(vote)).into_string()),
    }
}

fn transaction_with_meta(vote: &VoteTransaction, opts: &BlockOptions) -> Value {
    let c = compile(vote);
    let transaction = if opts.details == TransactionDetails::Accounts {
        json!({
            "signatures": [vote.signature.to_string()],
            "accountKeys": parsed_keys(&c),
        })
    } else {
        encoded_transaction(vote, &c, opts.encoding)
    };
    let mut out = json!({ "transaction": transaction, "meta": meta(vote, &c, opts.details) });
    if opts.max_supported_transaction_version.is_some() {
        out["version"] = json!("legacy");
    }
    out
}

/// A block in the shape of Solana's `getBlock` result (`UiConfirmedBlock`).
pub fn render_block(block: &BlockInfo, opts: &BlockOptions) -> Value {
    let mut out = json!({
        "blockhash": block.blockhash.to_string(),
        "previousBlockhash": block.previous_blockhash.to_string(),
        "parentSlot": block.parent_slot,
        "blockTime": block.block_time,
        "blockHeight": block.block_height,
    });
    match opts.details {
        TransactionDetails::Full | TransactionDetails::Accounts => {
            out["transactions"] = Value::Array(
                block
                    .votes
                    .iter()
                    .map(|v| transaction_with_meta(v, opts))
                    .collect(),
            );
        }
        TransactionDetails::Signatures => {
            out["signatures"] = Value::Array(
                block
                    .votes
                    .iter()
                    .map(|v| json!(v.signature.to_string()))
                    .collect(),
            );
        }
        TransactionDetails::None => {}
    }
    if opts.rewards {
        out["rewards"] = json!([]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Hash32, Sig64};

    fn vote() -> VoteTransaction {
        VoteTransaction {
            signature: Sig64([7; 64]),
            authorized_voter: Pubkey::from_seed_byte(1),
            vote_account: Pubkey::from_seed_byte(2),
            slots: vec![10, 11],
            hash: Hash32([3; 32]),
            timestamp: Some(1_700_000_000),
            recent_blockhash: Hash32([4; 32]),
            fee: 5000,
        }
    }

    #[test]
    fn instruction_data_is_solana_bincode() {
        let d = vote_instruction_data(&vote());
        assert_eq!(&d[..4], &[2, 0, 0, 0]);
        assert_eq!(&d[4..12], &2u64.to_le_bytes());
        assert_eq!(&d[12..20], &10u64.to_le_bytes());
        assert_eq!(d[20 + 8 + 32], 1);
        assert_eq!(d.len(), 4 + 8 + 16 + 32 + 9);
    }

    #[test]
    fn wire_format_layout() {
        let v = vote();
        let bytes = vote_transaction_bytes(&v);
        // 1 sig + header + 5 keys + blockhash + 1 ix (1 + 1 + 4 + 1 + data)
        let data_len = vote_instruction_data(&v).len();
        assert_eq!(
            bytes.len(),
            1 + 64 + 3 + 1 + 5 * 32 + 32 + 1 + 1 + 1 + 4 + 1 + data_len
        );
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[65..68], &[1, 0, 3]);
    }

    #[test]
    fn short_vec_encodes_like_solana() {
        let enc = |n| {
            let mut v = Vec::new();
            short_vec_len(&mut v, n);
            v
        };
        assert_eq!(enc(0), vec![0]);
        assert_eq!(enc(127), vec![0x7f]);
        assert_eq!(enc(128), vec![0x80, 0x01]);
        assert_eq!(enc(16384), vec![0x80, 0x80, 0x01]);
    }
}
