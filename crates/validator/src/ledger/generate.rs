//! A fast ledger generator, for the aging benchmark and tests: a one-validator chain
//! (the validator leads every slot and each block carries its vote on the block before),
//! written with the node's own formats ([`LedgerFiles`]: block segments, snapshots,
//! pruning). Blocks and votes are really signed, so the node replays them as it would
//! any block; the banks for the snapshots are computed with the core's own vote program
//! ([`Bank::apply_vote`]), trusting the signatures this generator just made.

use std::collections::{BTreeSet, VecDeque};

use huione_core::{Bank, Block, Genesis, SigVerifier, SignedVote, Slot};
use huione_keys::{Keypair, Pubkey, Signature};

use super::LedgerFiles;

/// Signatures made by this generator a moment ago: not checked again.
struct Trusted;

impl SigVerifier for Trusted {
    fn verify(&self, _: &Pubkey, _: &[u8], _: &Signature) -> bool {
        true
    }
}

/// Banks kept behind the tip: the root is 32 votes behind, so this covers it.
const BANKS_KEPT: usize = 64;

pub struct ChainGen {
    genesis: Genesis,
    identity: Keypair,
    vote_account: Pubkey,
    /// The banks of the last slots, oldest first.
    banks: VecDeque<Bank>,
    rooted_chain: BTreeSet<Slot>,
}

impl ChainGen {
    /// `genesis` must have `identity` as its only validator, voting with `vote_account`
    /// and authorized voter `identity`.
    pub fn new(genesis: Genesis, identity: Keypair, vote_account: Pubkey) -> Self {
        let bank = Bank::genesis(&genesis);
        ChainGen {
            genesis,
            identity,
            vote_account,
            banks: VecDeque::from([bank]),
            rooted_chain: BTreeSet::from([0]),
        }
    }

    pub fn tip(&self) -> &Bank {
        self.banks.back().expect("never empty")
    }

    /// The next block (slot tip + 1), carrying the validator's vote on the tip.
    pub fn next_block(&mut self) -> Block {
        let parent = self.tip().clone();
        let slot = parent.slot + 1;
        let votes = if parent.slot == 0 {
            Vec::new()
        } else {
            vec![SignedVote::sign(
                &self.identity,
                self.vote_account,
                self.identity.pubkey(),
                parent.slot,
                parent.hash,
                self.genesis.slot_start_ms(parent.slot),
            )]
        };
        let block = Block::produce(&self.identity, slot, parent.slot, parent.hash, votes);
        let mut bank = parent.child(slot, block.hash);
        for v in &block.votes {
            let banks = &self.banks;
            let _ = bank.apply_vote(v, &Trusted, |s| {
                let first = banks.front().map_or(0, |b| b.slot);
                s.checked_sub(first)
                    .and_then(|i| banks.get(i as usize))
                    .map(|b| b.hash)
            });
        }
        self.banks.push_back(bank);
        if self.banks.len() > BANKS_KEPT {
            self.banks.pop_front();
        }
        if let Some(root) = self.root() {
            let from = self.rooted_chain.last().map_or(0, |s| s + 1);
            self.rooted_chain.extend(from..=root);
            while self.rooted_chain.len() > huione_core::MAX_ROOTED_HISTORY {
                self.rooted_chain.pop_first();
            }
        }
        block
    }

    /// The chain's root: the vote account's root as of the tip (it has all the stake).
    pub fn root(&self) -> Option<Slot> {
        self.tip()
            .account(&self.vote_account)
            .and_then(|a| a.lockouts.root())
    }

    /// The bank at the root, if still kept.
    pub fn root_bank(&self) -> Option<&Bank> {
        let root = self.root()?;
        let first = self.banks.front()?.slot;
        self.banks
            .get(usize::try_from(root.checked_sub(first)?).ok()?)
    }

    pub fn rooted_chain(&self) -> &BTreeSet<Slot> {
        &self.rooted_chain
    }

    /// Generates `slots` more blocks into `files`, with snapshots and pruning as the node
    /// does them, syncing every `sync_every` blocks.
    pub fn write(
        &mut self,
        files: &mut LedgerFiles,
        slots: u64,
        sync_every: u64,
    ) -> anyhow::Result<()> {
        for i in 0..slots {
            let b = self.next_block();
            files.persist([&b])?;
            if (i + 1) % sync_every.max(1) == 0 || i + 1 == slots {
                files.sync_blocks()?;
                if let Some(bank) = self.root_bank() {
                    let bank = bank.clone();
                    files.maybe_snapshot(&bank, &self.rooted_chain)?;
                }
            }
        }
        Ok(())
    }
}
