//! Forward and backward trace of a lot over committed state: the lots it was made from
//! (transformation inputs, recursively) and the lots made from it, plus the logistic units
//! that carried it. Reads the same records the recall rule follows, so what a page shows is
//! what a recall would reach.

use std::collections::{BTreeMap, VecDeque};

use chain_core::node::Node;

use crate::contract::NAME;
use crate::domain::{Lot, LotRef, LotStatus, Unit, unit_key};

/// One lot in a trace: its level (negative = upstream, 0 = the lot asked about, positive =
/// downstream) and what the chain says about it.
#[derive(Debug, Clone)]
pub struct TraceNode {
    pub lot: LotRef,
    pub level: i32,
    pub status: Option<LotStatus>,
    pub custodian: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct TraceGraph {
    pub nodes: Vec<TraceNode>,
    /// (from, to) indexes into `nodes`: material flows from input to output.
    pub edges: Vec<(usize, usize)>,
    /// Logistic units (SSCC) that contained any of the lots.
    pub units: Vec<String>,
    /// The walk stopped at `max_nodes`.
    pub truncated: bool,
}

impl TraceGraph {
    pub fn index_of(&self, r: &LotRef) -> Option<usize> {
        self.nodes.iter().position(|n| &n.lot == r)
    }
}

async fn load(node: &Node, r: &LotRef) -> Result<Option<Lot>, String> {
    node.state_json::<Lot>(NAME, &r.state_key())
        .await
        .map_err(|e| e.to_string())
}

/// Walks both directions from `root`, breadth first, up to `max_nodes` lots.
pub async fn trace(node: &Node, root: &LotRef, max_nodes: usize) -> Result<TraceGraph, String> {
    let mut g = TraceGraph::default();
    let mut index: BTreeMap<LotRef, usize> = BTreeMap::new();
    let mut edges = std::collections::BTreeSet::new();
    let mut units = std::collections::BTreeSet::new();
    let mut queue = VecDeque::new();
    let root_lot = load(node, root).await?;
    index.insert(root.clone(), 0);
    g.nodes.push(TraceNode {
        lot: root.clone(),
        level: 0,
        status: root_lot.as_ref().map(|l| l.status),
        custodian: root_lot.as_ref().map(|l| l.custodian.clone()),
    });
    // Each direction is walked on its own, so a lot reached both ways keeps its first level.
    if let Some(l) = &root_lot {
        units.extend(l.units.iter().cloned());
        for i in &l.inputs {
            queue.push_back((i.clone(), -1, root.clone(), false));
        }
        for o in &l.outputs {
            queue.push_back((o.clone(), 1, root.clone(), true));
        }
    }
    while let Some((r, level, via, forward)) = queue.pop_front() {
        let edge_nodes = |index: &BTreeMap<LotRef, usize>, r: &LotRef| {
            let (a, b) = (index.get(&via).copied(), index.get(r).copied());
            match (a, b, forward) {
                (Some(a), Some(b), true) => Some((a, b)),
                (Some(a), Some(b), false) => Some((b, a)),
                _ => None,
            }
        };
        if index.contains_key(&r) {
            if let Some(e) = edge_nodes(&index, &r) {
                edges.insert(e);
            }
            continue;
        }
        if g.nodes.len() >= max_nodes {
            g.truncated = true;
            break;
        }
        let lot = load(node, &r).await?;
        index.insert(r.clone(), g.nodes.len());
        g.nodes.push(TraceNode {
            lot: r.clone(),
            level,
            status: lot.as_ref().map(|l| l.status),
            custodian: lot.as_ref().map(|l| l.custodian.clone()),
        });
        if let Some(e) = edge_nodes(&index, &r) {
            edges.insert(e);
        }
        if let Some(l) = lot {
            units.extend(l.units.iter().cloned());
            let next = if forward { &l.outputs } else { &l.inputs };
            for n in next {
                queue.push_back((
                    n.clone(),
                    level + if forward { 1 } else { -1 },
                    r.clone(),
                    forward,
                ));
            }
        }
    }
    g.edges = edges.into_iter().collect();
    g.units = units.into_iter().collect();
    Ok(g)
}

/// The lots packed in a logistic unit, for pages that start from an SSCC.
pub async fn unit_lots(node: &Node, sscc: &str) -> Result<Vec<LotRef>, String> {
    Ok(node
        .state_json::<Unit>(NAME, &unit_key(sscc))
        .await
        .map_err(|e| e.to_string())?
        .map(|u| u.lots)
        .unwrap_or_default())
}
