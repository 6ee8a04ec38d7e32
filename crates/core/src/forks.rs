//! The fork tree: every replayed bank above the root, stake-weighted heaviest-subtree
//! fork choice, and pruning when the root advances.
//!
//! Fork choice counts each vote account's latest vote (from replayed blocks and from
//! gossip) once, for the voted slot and all its ancestors; the best fork is found by
//! walking from the root to the heaviest child at each step (ties go to the lower
//! slot, so every node picks the same fork from the same votes).

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use huione_keys::Pubkey;
use huione_tower::Slot;

use crate::bank::Bank;
use crate::hash::Hash;

/// Rooted ancestors remembered below the root, so that lockouts on old slots can still
/// be checked. Older rooted slots are treated as "not an ancestor", which can only make
/// the tower more cautious.
pub const MAX_ROOTED_HISTORY: usize = 8192;

#[derive(Clone, Debug)]
struct Node {
    parent: Option<Slot>,
    bank: Bank,
    /// [`ForkTree::bank_root`]'s answer for this bank, once asked.
    bank_root: OnceCell<Option<Slot>>,
}

/// Subtree stake of the slots that have any counted vote in their subtree (a vote of a
/// zero-stake account gives its slot and ancestors an entry of 0), from the latest votes.
/// Dense from the root: fork choice is recomputed whenever a block or a vote arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Weights {
    /// The root's slot: `slots[i]` is slot `base + i`'s entry.
    base: Slot,
    slots: Vec<SlotChoice>,
}

/// Fork choice's working state for one slot, kept as the weights' storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotChoice {
    stake: Option<u64>,
    /// Index of the heaviest child (NO_CHILD: none).
    heaviest: usize,
    /// Index of the best leaf below (or at) this slot.
    leaf: usize,
}

const NO_CHILD: usize = usize::MAX;
const NO_PARENT: Slot = Slot::MAX;

impl Weights {
    /// The subtree stake of `slot`, if it has an entry.
    pub fn get(&self, slot: &Slot) -> Option<&u64> {
        let i = usize::try_from(slot.checked_sub(self.base)?).ok()?;
        self.slots.get(i)?.stake.as_ref()
    }

    /// Every (slot, subtree stake) entry, ascending by slot.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, u64)> + '_ {
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, c)| c.stake.map(|w| (base + i as Slot, w)))
    }

    pub fn len(&self) -> usize {
        self.slots.iter().filter(|c| c.stake.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|c| c.stake.is_none())
    }
}

impl std::ops::Index<&Slot> for Weights {
    type Output = u64;
    fn index(&self, slot: &Slot) -> &u64 {
        self.get(slot).expect("slot has a weight")
    }
}

impl IntoIterator for Weights {
    type Item = (Slot, u64);
    type IntoIter = std::vec::IntoIter<(Slot, u64)>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter().collect::<Vec<_>>().into_iter()
    }
}

/// A fast hasher for vote-account keys. Fork choice looks accounts up for every vote and
/// every recomputation; the keys are the genesis vote accounts (votes for any other
/// account are dropped before they get here), so there is no hash-flooding surface.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccountHasher(u64);

impl std::hash::Hasher for AccountHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

type AccountMap<V> = HashMap<Pubkey, V, std::hash::BuildHasherDefault<AccountHasher>>;

/// The result of fork choice: subtree weights and the best leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkChoice {
    pub weights: Weights,
    pub best: Slot,
}

#[derive(Clone, Debug)]
pub struct ForkTree {
    root: Slot,
    /// The node of slot `root + i` at index `i` (None: no block at that slot on a kept
    /// fork). Slots in the tree are bounded by root..=now+2 (replay drops blocks further
    /// ahead), and a child's slot is always above its parent's, so walking the indices
    /// down visits every child before its parent.
    nodes: VecDeque<Option<Node>>,
    /// `nodes[i]`'s parent slot (NO_PARENT: no node, or the root), packed apart so that
    /// fork choice's pass over the slots reads eight bytes per slot.
    parents: VecDeque<Slot>,
    /// How many of `nodes` are Some.
    count: usize,
    rooted_chain: BTreeSet<Slot>,
    latest_votes: AccountMap<(Slot, Hash)>,
    stakes: Arc<AccountMap<u64>>,
    /// Fork choice is asked for far more often than the tree or the votes change.
    cache: RefCell<Option<Arc<ForkChoice>>>,
    /// The choice last invalidated: its buffer is reused by the next computation when
    /// nobody holds it any more.
    spare: RefCell<Option<Arc<ForkChoice>>>,
    /// The last [`ForkTree::ancestry`] path: asked again for the same slot until we vote.
    ancestry_cache: RefCell<Option<(Slot, Arc<Vec<Slot>>)>>,
}

impl ForkTree {
    /// `stakes` gives each vote account's stake (fixed at genesis).
    pub fn new(
        root_bank: Bank,
        rooted_chain: BTreeSet<Slot>,
        stakes: HashMap<Pubkey, u64>,
    ) -> Self {
        let root = root_bank.slot;
        let mut nodes = VecDeque::new();
        nodes.push_back(Some(Node {
            parent: None,
            bank: root_bank,
            bank_root: OnceCell::new(),
        }));
        let mut t = ForkTree {
            root,
            nodes,
            parents: VecDeque::from([NO_PARENT]),
            count: 1,
            rooted_chain,
            latest_votes: AccountMap::default(),
            stakes: Arc::new(stakes.into_iter().collect()),
            cache: RefCell::new(None),
            spare: RefCell::new(None),
            ancestry_cache: RefCell::new(None),
        };
        t.rooted_chain.insert(root);
        t
    }

    fn index(&self, slot: Slot) -> Option<usize> {
        usize::try_from(slot.checked_sub(self.root)?).ok()
    }

    fn node(&self, slot: Slot) -> Option<&Node> {
        self.nodes.get(self.index(slot)?)?.as_ref()
    }

    fn node_mut(&mut self, slot: Slot) -> Option<&mut Node> {
        let i = self.index(slot)?;
        self.nodes.get_mut(i)?.as_mut()
    }

    pub fn root(&self) -> Slot {
        self.root
    }
    pub fn root_bank(&self) -> &Bank {
        &self.node(self.root).expect("the root is in the tree").bank
    }
    pub fn rooted_chain(&self) -> &BTreeSet<Slot> {
        &self.rooted_chain
    }
    /// The root bank and the rooted chain, without copying them.
    pub fn into_root(mut self) -> (Bank, BTreeSet<Slot>) {
        let root = self
            .nodes
            .pop_front()
            .flatten()
            .expect("the root is in the tree");
        (root.bank, self.rooted_chain)
    }
    pub fn contains(&self, slot: Slot) -> bool {
        self.node(slot).is_some()
    }
    pub fn bank(&self, slot: Slot) -> Option<&Bank> {
        self.node(slot).map(|n| &n.bank)
    }
    /// The parent of a tree slot (None for the root and for slots not in the tree).
    pub fn parent(&self, slot: Slot) -> Option<Slot> {
        self.node(slot).and_then(|n| n.parent)
    }
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// The highest slot in the tree (the root when it is alone).
    pub fn highest_slot(&self) -> Slot {
        let last = self.nodes.iter().rposition(|n| n.is_some()).unwrap_or(0);
        self.root + last as Slot
    }
    /// Slots in the tree, ascending.
    pub fn slots(&self) -> Vec<Slot> {
        self.slots_iter().collect()
    }

    fn slots_iter(&self) -> impl Iterator<Item = Slot> + '_ {
        let root = self.root;
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_some())
            .map(move |(i, _)| root + i as Slot)
    }

    /// The hash of the block at `ancestor` on the fork ending at `tip` (inclusive).
    pub fn fork_hash(&self, tip: Slot, ancestor: Slot) -> Option<Hash> {
        let mut cur = Some(tip);
        while let Some(s) = cur {
            if s < ancestor {
                return None;
            }
            let node = self.node(s)?;
            if s == ancestor {
                return Some(node.bank.hash);
            }
            cur = node.parent;
        }
        None
    }

    /// True when `a` is a strict ancestor of `b` (`b` must be in the tree).
    pub fn is_ancestor(&self, a: Slot, b: Slot) -> bool {
        if a >= b || !self.contains(b) {
            return false;
        }
        if a <= self.root {
            return self.rooted_chain.contains(&a);
        }
        self.fork_hash(b, a).is_some()
    }

    /// `|a| self.is_ancestor(a, b)` for many `a` and one `b`: walks `b`'s fork once (and
    /// not again while `b` is asked for repeatedly and the root stays).
    pub fn ancestry(&self, b: Slot) -> Ancestry<'_> {
        let cached = match self.ancestry_cache.borrow().as_ref() {
            Some((slot, path)) if *slot == b => Some(Arc::clone(path)),
            _ => None,
        };
        let in_tree = self.contains(b);
        let path = cached.unwrap_or_else(|| {
            let path = Arc::new(self.ancestors_ascending(b));
            // A slot not in the tree yet may be inserted later: only tree slots are kept.
            if in_tree {
                *self.ancestry_cache.borrow_mut() = Some((b, Arc::clone(&path)));
            }
            path
        });
        Ancestry {
            tree: self,
            b,
            in_tree,
            path,
        }
    }

    /// `b`'s strict ancestors in the tree, ascending (empty if `b` is not in the tree).
    fn ancestors_ascending(&self, b: Slot) -> Vec<Slot> {
        let mut path = Vec::new();
        let mut cur = self.parent(b);
        while let Some(s) = cur {
            path.push(s);
            cur = self.parent(s);
        }
        // The walk goes down in slot order; ascending for binary search.
        path.reverse();
        path
    }

    /// `compute(bank)` for the bank at `slot`, computed once per bank: a bank does not
    /// change once it is in the tree, so `compute` must depend on nothing else that
    /// changes (the core's supermajority root of a bank depends on it and the fixed
    /// stakes). None if `slot` is not in the tree.
    pub fn bank_root(
        &self,
        slot: Slot,
        compute: impl FnOnce(&Bank) -> Option<Slot>,
    ) -> Option<Slot> {
        let node = self.node(slot)?;
        *node.bank_root.get_or_init(|| compute(&node.bank))
    }

    /// Adds a replayed bank under `parent` (which must be in the tree, at a lower slot).
    /// A bank for a slot already in the tree is ignored: the first block stays.
    pub fn insert(&mut self, parent: Slot, bank: Bank) {
        let slot = bank.slot;
        if slot <= parent || self.contains(slot) {
            return;
        }
        let Some(i) = self.index(slot) else {
            return;
        };
        if !self.contains(parent) {
            return;
        }
        self.invalidate();
        if self.nodes.len() <= i {
            self.nodes.resize(i + 1, None);
            self.parents.resize(i + 1, NO_PARENT);
        }
        self.parents[i] = parent;
        self.nodes[i] = Some(Node {
            parent: Some(parent),
            bank,
            bank_root: OnceCell::new(),
        });
        self.count += 1;
    }

    /// Records `vote_account`'s vote for (`slot`, `hash`) if it is newer than its latest.
    pub fn observe_vote(&mut self, vote_account: Pubkey, slot: Slot, hash: Hash) {
        let e = self
            .latest_votes
            .entry(vote_account)
            .or_insert((0, Hash::default()));
        if slot > e.0 {
            let old = std::mem::replace(e, (slot, hash));
            // Only a vote fork choice counts (its bank is in the tree with that hash)
            // changes the weights: keep the cached choice when neither the old nor the
            // new vote counts.
            if self.counts(old) || self.counts((slot, hash)) {
                self.invalidate();
            }
        }
    }

    /// Whether fork choice counts a vote for (`slot`, `hash`): its bank is in the tree.
    fn counts(&self, (slot, hash): (Slot, Hash)) -> bool {
        self.node(slot).is_some_and(|n| n.bank.hash == hash)
    }

    pub fn latest_vote(&self, vote_account: &Pubkey) -> Option<(Slot, Hash)> {
        self.latest_votes.get(vote_account).copied()
    }

    fn invalidate(&self) {
        if let Some(old) = self.cache.take() {
            *self.spare.borrow_mut() = Some(old);
        }
    }

    /// Fork choice from the current tree and latest votes (cached until either changes).
    pub fn fork_choice(&self) -> Arc<ForkChoice> {
        if let Some(c) = self.cache.borrow().as_ref() {
            return Arc::clone(c);
        }
        let choice = Arc::new(self.compute_fork_choice());
        *self.cache.borrow_mut() = Some(Arc::clone(&choice));
        choice
    }

    /// The stake of a vote account.
    pub fn stake_of(&self, vote_account: &Pubkey) -> u64 {
        self.stakes.get(vote_account).copied().unwrap_or(0)
    }

    /// Subtree stake per slot: each counted vote's stake on its slot, summed up the tree
    /// children-first (including which slots have an entry: exactly the counted slots and
    /// their ancestors, as when walking every vote to the root). The best leaf: from the
    /// root, the heaviest child at each step, ties to the lower slot.
    ///
    /// Both in one pass down the slots: a child's slot is above its parent's, so each
    /// node is complete (its subtree stake, its heaviest child and that child's best leaf)
    /// when it is reached, and then offers itself to its parent.
    fn compute_fork_choice(&self) -> ForkChoice {
        let empty = SlotChoice {
            stake: None,
            heaviest: NO_CHILD,
            leaf: 0,
        };
        let mut c = self
            .spare
            .take()
            .and_then(|old| Arc::try_unwrap(old).ok())
            .map(|old| old.weights.slots)
            .unwrap_or_default();
        c.clear();
        c.resize(self.nodes.len(), empty);
        for (account, vote) in &self.latest_votes {
            if self.counts(*vote) {
                let i = self.index(vote.0).expect("counted votes are in the tree");
                *c[i].stake.get_or_insert(0) += self.stake_of(account);
            }
        }
        for i in (1..c.len()).rev() {
            let parent = self.parents[i];
            if parent == NO_PARENT {
                continue; // no block at this slot
            }
            c[i].leaf = match c[i].heaviest {
                NO_CHILD => i,
                h => c[h].leaf,
            };
            let p = (parent - self.root) as usize;
            if let Some(w) = c[i].stake {
                *c[p].stake.get_or_insert(0) += w;
            }
            // Offered in descending slot order: on a tie the lower slot replaces.
            let h = c[p].heaviest;
            if h == NO_CHILD || c[i].stake.unwrap_or(0) >= c[h].stake.unwrap_or(0) {
                c[p].heaviest = i;
            }
        }
        let best = match c.first().map(|r| r.heaviest) {
            Some(h) if h != NO_CHILD => c[h].leaf,
            _ => 0,
        };
        ForkChoice {
            weights: Weights {
                base: self.root,
                slots: c,
            },
            best: self.root + best as Slot,
        }
    }

    /// Makes `new_root` (a tree slot above the root) the root and drops every bank not
    /// descended from it. Returns how many banks were pruned.
    pub fn set_root(&mut self, new_root: Slot) -> usize {
        if new_root <= self.root || !self.contains(new_root) {
            return 0;
        }
        self.invalidate();
        self.ancestry_cache.take();
        let mut cur = Some(new_root);
        while let Some(s) = cur {
            self.rooted_chain.insert(s);
            cur = self.node(s).and_then(|n| n.parent);
        }
        while self.rooted_chain.len() > MAX_ROOTED_HISTORY {
            self.rooted_chain.pop_first();
        }
        let before = self.count;
        let skip = self.index(new_root).expect("above the root");
        self.nodes.drain(..skip);
        self.parents.drain(..skip);
        self.root = new_root;
        // Ascending, a slot is kept when its parent was (the new root is kept).
        let mut keep = vec![false; self.nodes.len()];
        keep[0] = true;
        for i in 1..self.nodes.len() {
            let parent = self.parents[i];
            keep[i] = parent != NO_PARENT
                && parent
                    .checked_sub(new_root)
                    .is_some_and(|p| keep[p as usize]);
            if !keep[i] {
                self.nodes[i] = None;
                self.parents[i] = NO_PARENT;
            }
        }
        while self.nodes.back().is_some_and(|n| n.is_none()) {
            self.nodes.pop_back();
            self.parents.pop_back();
        }
        self.count = keep.iter().filter(|k| **k).count();
        self.node_mut(new_root).expect("kept").parent = None;
        self.parents[0] = NO_PARENT;
        let root = self.root;
        self.latest_votes.retain(|_, (s, _)| *s + (1 << 16) > root);
        before - self.count
    }
}

/// The strict ancestors of one tree slot (see [`ForkTree::ancestry`]).
#[derive(Debug)]
pub struct Ancestry<'a> {
    tree: &'a ForkTree,
    b: Slot,
    in_tree: bool,
    /// `b`'s strict ancestors in the tree, ascending.
    path: Arc<Vec<Slot>>,
}

impl Ancestry<'_> {
    /// Same answer as `tree.is_ancestor(a, b)`.
    pub fn is_ancestor(&self, a: Slot) -> bool {
        if a >= self.b || !self.in_tree {
            return false;
        }
        if a <= self.tree.root {
            return self.tree.rooted_chain.contains(&a);
        }
        self.path.binary_search(&a).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::{Genesis, GenesisValidator};

    fn tree() -> ForkTree {
        let v = GenesisValidator {
            identity: Pubkey::from_seed_byte(1),
            vote_account: Pubkey::from_seed_byte(2),
            authorized_voter: Pubkey::from_seed_byte(1),
            stake: 1,
        };
        let g = Genesis::new(vec![v], 100, 64, 0).unwrap();
        let root = Bank::genesis(&g);
        let stakes = (10..13)
            .map(|b| (Pubkey::from_seed_byte(b), b as u64))
            .collect();
        let mut t = ForkTree::new(root.clone(), BTreeSet::new(), stakes);
        // 0 - 1 - 2 - 4
        //       \ 3 - 5
        for (slot, parent) in [(1, 0), (2, 1), (3, 1), (4, 2), (5, 3)] {
            t.insert(parent, root.child(slot, Hash([slot as u8; 32])));
        }
        t
    }

    #[test]
    fn heaviest_fork_and_ancestry() {
        let mut t = tree();
        let a = Pubkey::from_seed_byte(10);
        let b = Pubkey::from_seed_byte(11);
        let c = Pubkey::from_seed_byte(12);
        // no votes: lowest slots win ties
        assert_eq!(t.fork_choice().best, 4);
        t.observe_vote(a, 5, Hash([5; 32]));
        assert_eq!(t.fork_choice().best, 5);
        t.observe_vote(b, 4, Hash([4; 32]));
        t.observe_vote(c, 2, Hash([2; 32]));
        let w = t.fork_choice().weights.clone();
        assert_eq!((w[&1], w[&2], w[&3]), (33, 23, 10));
        assert_eq!(t.fork_choice().best, 4);
        // a vote with the wrong hash does not count
        t.observe_vote(a, 6, Hash([9; 32]));
        assert_eq!(t.fork_choice().weights.get(&3), None);
        assert!(t.is_ancestor(1, 5) && t.is_ancestor(0, 5) && !t.is_ancestor(2, 5));
        assert!(!t.is_ancestor(5, 5));
        assert_eq!(t.fork_hash(5, 3), Some(Hash([3; 32])));
        assert_eq!(t.fork_hash(5, 2), None);
        for b in 0..8 {
            let anc = t.ancestry(b);
            for a in 0..8 {
                assert_eq!(anc.is_ancestor(a), t.is_ancestor(a, b), "{a} of {b}");
            }
        }
    }

    #[test]
    fn set_root_prunes_other_forks_and_remembers_rooted_chain() {
        let mut t = tree();
        assert_eq!(t.set_root(2), 4, "0, 1, 3 and 5 go");
        assert_eq!(t.slots(), vec![2, 4]);
        assert!(t.is_ancestor(1, 4) && t.is_ancestor(0, 4) && !t.is_ancestor(3, 4));
        assert_eq!(t.set_root(1), 0, "roots never move back");
        assert_eq!(t.root(), 2);
        for b in 0..8 {
            let anc = t.ancestry(b);
            for a in 0..8 {
                assert_eq!(anc.is_ancestor(a), t.is_ancestor(a, b), "{a} of {b}");
            }
        }
    }
    /// The dense weights equal the definition: every counted vote's stake on its slot
    /// and each ancestor up to the root, on random trees, votes and roots.
    #[test]
    fn weights_match_a_walk_per_vote() {
        let g = Genesis::new(
            vec![GenesisValidator {
                identity: Pubkey::from_seed_byte(1),
                vote_account: Pubkey::from_seed_byte(2),
                authorized_voter: Pubkey::from_seed_byte(1),
                stake: 1,
            }],
            100,
            64,
            0,
        )
        .unwrap();
        let genesis_bank = Bank::genesis(&g);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..50 {
            let accounts: Vec<Pubkey> = (10..20).map(Pubkey::from_seed_byte).collect();
            let stakes = accounts
                .iter()
                .enumerate()
                .map(|(i, a)| (*a, i as u64 % 3 * 7))
                .collect();
            let mut t = ForkTree::new(genesis_bank.clone(), BTreeSet::new(), stakes);
            for slot in 1..60u64 {
                let slots = t.slots();
                if next(4) > 0 {
                    let parent = slots[next(slots.len() as u64) as usize];
                    t.insert(parent, genesis_bank.child(slot, Hash([slot as u8; 32])));
                }
                for _ in 0..next(3) {
                    let a = accounts[next(10) as usize];
                    let s = next(slot + 1);
                    let h = if next(5) == 0 {
                        [0xee; 32]
                    } else {
                        [s as u8; 32]
                    };
                    t.observe_vote(a, s, Hash(h));
                }
                if next(10) == 0 {
                    let slots = t.slots();
                    t.set_root(slots[next(slots.len() as u64) as usize]);
                }
                let mut want: HashMap<Slot, u64> = HashMap::new();
                for a in &accounts {
                    let Some((s, h)) = t.latest_vote(a) else {
                        continue;
                    };
                    if t.bank(s).is_some_and(|b| b.hash == h) {
                        let mut cur = Some(s);
                        while let Some(c) = cur {
                            *want.entry(c).or_default() += t.stake_of(a);
                            cur = t.node(c).and_then(|n| n.parent);
                        }
                    }
                }
                let got: HashMap<Slot, u64> = t.fork_choice().weights.clone().into_iter().collect();
                assert_eq!(got, want);
                assert_eq!(t.slots().len(), t.len());
                // From the root, the heaviest child at each step, ties to the lower slot.
                let mut best = t.root();
                loop {
                    let child = t
                        .slots()
                        .into_iter()
                        .filter(|c| t.node(*c).unwrap().parent == Some(best))
                        .max_by_key(|c| (want.get(c).copied().unwrap_or(0), std::cmp::Reverse(*c)));
                    match child {
                        Some(c) => best = c,
                        None => break,
                    }
                }
                assert_eq!(t.fork_choice().best, best);
                // Ancestry (cached per slot) agrees with the walk, before and after inserts
                // and new roots; so does a slot asked for before its block arrives.
                for b in [best, slot + 1] {
                    let anc = t.ancestry(b);
                    for a in t.root().saturating_sub(3)..slot + 2 {
                        assert_eq!(anc.is_ancestor(a), t.is_ancestor(a, b), "{a} of {b}");
                    }
                }
            }
        }
    }
}
