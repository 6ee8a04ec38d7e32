//! The launcher's progress and status lines, from plain per-node observations.

use std::fmt::Write as _;

/// What the launcher last saw of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Spawned, RPC not answering yet (during start-up).
    Starting,
    /// RPC answered.
    Up {
        /// `getSlot` at processed commitment: the newest slot it replayed.
        slot: u64,
        /// `getSlot` at finalized commitment: the cluster's root as the node sees it.
        finalized: u64,
        /// `getHealth` said "ok".
        healthy: bool,
    },
    /// RPC stopped answering (frozen, overloaded, or its port is gone).
    Unreachable,
    /// The process is gone; how it ended.
    Exited(String),
}

/// One node's line item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub state: NodeState,
}

/// Explains [`status_line`]'s notation; printed once.
pub const STATUS_LEGEND: &str = "status every second: <node> <slot>/<finalized slot>; \
     '*' = getHealth not ok, 'down' = RPC not answering, 'exited' = process gone. \
     Ctrl-C stops the cluster.";

/// Nodes whose RPC answered.
pub fn up_count(nodes: &[NodeStatus]) -> usize {
    nodes
        .iter()
        .filter(|n| matches!(n.state, NodeState::Up { .. }))
        .count()
}

/// During start-up: `starting: 2/4 answer RPC | validator-0 slot 3 | primary starting | …`.
pub fn progress_line(nodes: &[NodeStatus]) -> String {
    let mut line = format!("starting: {}/{} answer RPC", up_count(nodes), nodes.len());
    for n in nodes {
        let _ = match &n.state {
            NodeState::Up { slot, healthy, .. } => write!(
                line,
                " | {} slot {slot}{}",
                n.name,
                if *healthy { "" } else { " (not healthy yet)" }
            ),
            NodeState::Starting | NodeState::Unreachable => write!(line, " | {} starting", n.name),
            NodeState::Exited(how) => write!(line, " | {} exited ({how})", n.name),
        };
    }
    line
}

/// Once running, one line per second: `[   12s] validator-0 150/118  primary 149/118*  …`.
pub fn status_line(elapsed_secs: u64, nodes: &[NodeStatus]) -> String {
    let mut line = format!("[{elapsed_secs:>6}s]");
    for n in nodes {
        let _ = match &n.state {
            NodeState::Up {
                slot,
                finalized,
                healthy,
            } => write!(
                line,
                "  {} {slot}/{finalized}{}",
                n.name,
                if *healthy { "" } else { "*" }
            ),
            NodeState::Starting | NodeState::Unreachable => write!(line, "  {} down", n.name),
            NodeState::Exited(_) => write!(line, "  {} exited", n.name),
        };
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<NodeStatus> {
        let n = |name: &str, state| NodeStatus {
            name: name.into(),
            state,
        };
        vec![
            n(
                "validator-0",
                NodeState::Up {
                    slot: 150,
                    finalized: 118,
                    healthy: true,
                },
            ),
            n(
                "primary",
                NodeState::Up {
                    slot: 149,
                    finalized: 118,
                    healthy: false,
                },
            ),
            n("secondary", NodeState::Starting),
            n("validator-3", NodeState::Exited("signal 9".into())),
        ]
    }

    #[test]
    fn lines() {
        assert_eq!(
            progress_line(&nodes()),
            "starting: 2/4 answer RPC | validator-0 slot 150 | primary slot 149 (not healthy yet) \
             | secondary starting | validator-3 exited (signal 9)"
        );
        assert_eq!(
            status_line(12, &nodes()),
            "[    12s]  validator-0 150/118  primary 149/118*  secondary down  validator-3 exited"
        );
    }
}
