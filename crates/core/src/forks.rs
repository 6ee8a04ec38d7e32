//! The fork tree: every replayed bank above the root, stake-weighted heaviest-subtree
//! fork choice, and pruning when the root advances.
//!
//! Fork choice counts each vote account's latest vote (from replayed blocks and from
//! gossip) once, for the voted slot and all its ancestors; the best fork is found by
//! walking from the root to the heaviest child at each step (ties go to the lower
//! slot, so every node picks the same fork from the same votes).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
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
    children: Vec<Slot>,
    bank: Bank,
}

/// Subtree stake of the slots that have any, from the latest votes.
pub type Weights = HashMap<Slot, u64, SlotHasher>;

/// A fast hasher for slot keys (Fibonacci multiply). Fork choice hashes slots hundreds
/// of times per block; SipHash was a third of the simulator's time. Slot keys in the
/// tree are bounded by root..=now+2, so there is no hash-flooding surface.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl std::hash::BuildHasher for SlotHasher {
    type Hasher = SlotHasher;
    fn build_hasher(&self) -> SlotHasher {
        SlotHasher(0)
    }
}

/// The result of fork choice: subtree weights and the best leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkChoice {
    pub weights: Weights,
    pub best: Slot,
}

#[derive(Clone, Debug)]
pub struct ForkTree {
    root: Slot,
    nodes: HashMap<Slot, Node, SlotHasher>,
    rooted_chain: BTreeSet<Slot>,
    latest_votes: HashMap<Pubkey, (Slot, Hash)>,
    stakes: Arc<HashMap<Pubkey, u64>>,
    /// Fork choice is asked for far more often than the tree or the votes change.
    cache: RefCell<Option<Arc<ForkChoice>>>,
}

impl ForkTree {
    /// `stakes` gives each vote account's stake (fixed at genesis).
    pub fn new(
        root_bank: Bank,
        rooted_chain: BTreeSet<Slot>,
        stakes: HashMap<Pubkey, u64>,
    ) -> Self {
        let root = root_bank.slot;
        let mut nodes = HashMap::with_hasher(SlotHasher::default());
        nodes.insert(
            root,
            Node {
                parent: None,
                children: Vec::new(),
                bank: root_bank,
            },
        );
        let mut t = ForkTree {
            root,
            nodes,
            rooted_chain,
            latest_votes: HashMap::new(),
            stakes: Arc::new(stakes),
            cache: RefCell::new(None),
        };
        t.rooted_chain.insert(root);
        t
    }

    pub fn root(&self) -> Slot {
        self.root
    }
    pub fn root_bank(&self) -> &Bank {
        &self.nodes[&self.root].bank
    }
    pub fn rooted_chain(&self) -> &BTreeSet<Slot> {
        &self.rooted_chain
    }
    pub fn contains(&self, slot: Slot) -> bool {
        self.nodes.contains_key(&slot)
    }
    pub fn bank(&self, slot: Slot) -> Option<&Bank> {
        self.nodes.get(&slot).map(|n| &n.bank)
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// Slots in the tree, ascending.
    pub fn slots(&self) -> Vec<Slot> {
        let mut s: Vec<Slot> = self.nodes.keys().copied().collect();
        s.sort_unstable();
        s
    }

    /// The hash of the block at `ancestor` on the fork ending at `tip` (inclusive).
    pub fn fork_hash(&self, tip: Slot, ancestor: Slot) -> Option<Hash> {
        let mut cur = Some(tip);
        while let Some(s) = cur {
            if s < ancestor {
                return None;
            }
            let node = self.nodes.get(&s)?;
            if s == ancestor {
                return Some(node.bank.hash);
            }
            cur = node.parent;
        }
        None
    }

    /// True when `a` is a strict ancestor of `b` (`b` must be in the tree).
    pub fn is_ancestor(&self, a: Slot, b: Slot) -> bool {
        if a >= b || !self.nodes.contains_key(&b) {
            return false;
        }
        if a <= self.root {
            return self.rooted_chain.contains(&a);
        }
        self.fork_hash(b, a).is_some()
    }

    /// `|a| self.is_ancestor(a, b)` for many `a` and one `b`: walks `b`'s fork once.
    pub fn ancestry(&self, b: Slot) -> Ancestry<'_> {
        let mut path = Vec::new();
        if let Some(node) = self.nodes.get(&b) {
            let mut cur = node.parent;
            while let Some(s) = cur {
                path.push(s);
                cur = self.nodes.get(&s).and_then(|n| n.parent);
            }
        }
        // The walk goes down in slot order; ascending for binary search.
        path.reverse();
        Ancestry {
            tree: self,
            b,
            in_tree: self.nodes.contains_key(&b),
            path,
        }
    }

    /// Adds a replayed bank under `parent` (which must be in the tree).
    pub fn insert(&mut self, parent: Slot, bank: Bank) {
        self.cache.take();
        let slot = bank.slot;
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.push(slot);
            p.children.sort_unstable();
            self.nodes.insert(
                slot,
                Node {
                    parent: Some(parent),
                    children: Vec::new(),
                    bank,
                },
            );
        }
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
            let counts =
                |(s, h): (Slot, Hash)| self.nodes.get(&s).is_some_and(|n| n.bank.hash == h);
            if counts(old) || counts((slot, hash)) {
                self.cache.take();
            }
        }
    }

    pub fn latest_vote(&self, vote_account: &Pubkey) -> Option<(Slot, Hash)> {
        self.latest_votes.get(vote_account).copied()
    }

    /// Fork choice from the current tree and latest votes (cached until either changes).
    pub fn fork_choice(&self) -> Arc<ForkChoice> {
        if let Some(c) = self.cache.borrow().as_ref() {
            return Arc::clone(c);
        }
        let weights = self.weights();
        let best = self.best_leaf(&weights);
        let choice = Arc::new(ForkChoice { weights, best });
        *self.cache.borrow_mut() = Some(Arc::clone(&choice));
        choice
    }

    /// The stake of a vote account.
    pub fn stake_of(&self, vote_account: &Pubkey) -> u64 {
        self.stakes.get(vote_account).copied().unwrap_or(0)
    }

    /// Subtree stake per slot: each counted vote's stake on its slot, then summed up the
    /// tree children-first. Same result (including which slots have an entry: exactly the
    /// counted slots and their ancestors) as walking every vote to the root, in one pass
    /// over the tree instead of one walk per vote.
    fn weights(&self) -> Weights {
        let mut w = Weights::with_capacity_and_hasher(self.nodes.len(), SlotHasher::default());
        for (account, (slot, hash)) in &self.latest_votes {
            let Some(node) = self.nodes.get(slot) else {
                continue;
            };
            if node.bank.hash != *hash {
                continue;
            }
            *w.entry(*slot).or_default() += self.stake_of(account);
        }
        if w.is_empty() {
            return w;
        }
        // Pre-order from the root; reversed, every child comes before its parent.
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![self.root];
        while let Some(s) = stack.pop() {
            order.push(s);
            stack.extend(self.nodes[&s].children.iter().copied());
        }
        for s in order.iter().rev() {
            let Some(&stake) = w.get(s) else {
                continue;
            };
            if let Some(p) = self.nodes[s].parent {
                *w.entry(p).or_default() += stake;
            }
        }
        w
    }

    /// The leaf at the end of the heaviest fork.
    fn best_leaf(&self, weights: &Weights) -> Slot {
        let mut cur = self.root;
        loop {
            let children = &self.nodes[&cur].children;
            // children are sorted, so max_by_key's last-max rule needs a reversed tie.
            let best = children
                .iter()
                .max_by_key(|c| (weights.get(c).copied().unwrap_or(0), std::cmp::Reverse(**c)));
            match best {
                Some(c) => cur = *c,
                None => return cur,
            }
        }
    }

    /// Makes `new_root` (a tree slot above the root) the root and drops every bank not
    /// descended from it. Returns how many banks were pruned.
    pub fn set_root(&mut self, new_root: Slot) -> usize {
        if new_root <= self.root || !self.nodes.contains_key(&new_root) {
            return 0;
        }
        self.cache.take();
        let mut cur = Some(new_root);
        while let Some(s) = cur {
            self.rooted_chain.insert(s);
            cur = self.nodes[&s].parent;
        }
        while self.rooted_chain.len() > MAX_ROOTED_HISTORY {
            self.rooted_chain.pop_first();
        }
        let keep = self.descendants(new_root);
        let before = self.nodes.len();
        self.nodes.retain(|s, _| keep.contains(s));
        self.nodes.get_mut(&new_root).expect("kept").parent = None;
        self.root = new_root;
        let root = self.root;
        self.latest_votes.retain(|_, (s, _)| *s + (1 << 16) > root);
        before - self.nodes.len()
    }

    fn descendants(&self, slot: Slot) -> BTreeSet<Slot> {
        let mut out = BTreeSet::new();
        let mut stack = vec![slot];
        while let Some(s) = stack.pop() {
            out.insert(s);
            stack.extend(self.nodes[&s].children.iter().copied());
        }
        out
    }
}

/// The strict ancestors of one tree slot (see [`ForkTree::ancestry`]).
#[derive(Debug)]
pub struct Ancestry<'a> {
    tree: &'a ForkTree,
    b: Slot,
    in_tree: bool,
    /// `b`'s strict ancestors in the tree, ascending.
    path: Vec<Slot>,
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
}
