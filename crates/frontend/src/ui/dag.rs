//! A lineage drawn as SVG on the server: parents above children, one row per generation
//! counted from the message, nodes coloured by state and linked to their pages.

use std::collections::{BTreeMap, HashMap, VecDeque};

use maud::{Markup, html};
use uuid::Uuid;

use super::widgets::{message_href, short};
use crate::causality::Lineage;

/// Nodes drawn per generation; the rest are counted.
pub const ROW_SHOWN_MAX: usize = 24;
const NODE_W: i64 = 170;
const NODE_H: i64 = 40;
const GAP_X: i64 = 20;
const GAP_Y: i64 = 44;

/// Each node's generation relative to `focus` (parents −1, children +1), by a walk along
/// the edges both ways from it; a node the walk cannot reach stays on the focus's row.
fn generations(g: &Lineage, focus: Uuid) -> HashMap<Uuid, i64> {
    let mut next: HashMap<Uuid, Vec<(Uuid, i64)>> = HashMap::new();
    for e in &g.edges {
        next.entry(e.from).or_default().push((e.to, 1));
        next.entry(e.to).or_default().push((e.from, -1));
    }
    let mut depth = HashMap::from([(focus, 0)]);
    let mut todo = VecDeque::from([focus]);
    while let Some(at) = todo.pop_front() {
        let d = depth[&at];
        for &(other, step) in next.get(&at).map(Vec::as_slice).unwrap_or_default() {
            depth.entry(other).or_insert_with(|| {
                todo.push_back(other);
                d + step
            });
        }
    }
    for n in &g.nodes {
        depth.entry(n.id).or_insert(0);
    }
    depth
}

/// The graph around `focus` as an `svg#lineage`.
pub fn draw(g: &Lineage, focus: Uuid) -> Markup {
    let depth = generations(g, focus);
    let mut rows: BTreeMap<i64, Vec<&crate::causality::Node>> = BTreeMap::new();
    for n in &g.nodes {
        rows.entry(depth[&n.id]).or_default().push(n);
    }
    let mut at: HashMap<Uuid, (i64, i64)> = HashMap::new();
    let mut hidden: Vec<(i64, usize)> = Vec::new();
    let widest = rows
        .values()
        .map(|r| r.len().min(ROW_SHOWN_MAX))
        .max()
        .unwrap_or(1) as i64;
    for (row, (_, nodes)) in rows.iter_mut().enumerate() {
        nodes.sort_by_key(|n| n.id);
        let shown = nodes.len().min(ROW_SHOWN_MAX) as i64;
        // Rows are centred under the widest one.
        let left = GAP_X + (widest - shown) * (NODE_W + GAP_X) / 2;
        let y = GAP_Y / 2 + row as i64 * (NODE_H + GAP_Y);
        for (i, n) in nodes.iter().take(ROW_SHOWN_MAX).enumerate() {
            at.insert(n.id, (left + i as i64 * (NODE_W + GAP_X), y));
        }
        if nodes.len() > ROW_SHOWN_MAX {
            hidden.push((y, nodes.len() - ROW_SHOWN_MAX));
        }
    }
    let width = GAP_X + widest * (NODE_W + GAP_X) + if hidden.is_empty() { 0 } else { 120 };
    let height = rows.len() as i64 * (NODE_H + GAP_Y);
    html! {
        div.dag {
            svg #lineage width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) }
                role="img" aria-label="the message's ancestors and descendants" {
                defs {
                    marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                        path d="M 0 0 L 10 5 L 0 10 z" {}
                    }
                }
                @for e in &g.edges {
                    @if let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(&e.from), at.get(&e.to)) {
                        line x1=(x1 + NODE_W / 2) y1=(y1 + NODE_H) x2=(x2 + NODE_W / 2) y2=(y2)
                            marker-end="url(#arrow)" {}
                    }
                }
                @for n in &g.nodes {
                    @if let Some(&(x, y)) = at.get(&n.id) {
                        a href=(message_href(&n.queue, n.id)) {
                            g class={ "node n-" (n.state) @if n.id == focus { " focus" } }
                                data-id=(n.id) transform={ "translate(" (x) "," (y) ")" } {
                                title { (n.id) " · " (n.state) " · " (n.queue) }
                                rect width=(NODE_W) height=(NODE_H) {}
                                text x="8" y="17" { (short(n.id)) }
                                text.q x="8" y="32" { (n.queue) " · " (n.state) }
                            }
                        }
                    }
                }
                @for (y, more) in &hidden {
                    text x=(width - 110) y=(y + NODE_H / 2) { "+" (more) " more" }
                }
            }
        }
        @if g.truncated { p.muted { "The graph is cut at its bounds (levels or nodes)." } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::{Edge, Node};

    fn node(n: u128) -> Node {
        Node {
            id: Uuid::from_u128(n),
            queue: "q".into(),
            state: "waiting",
        }
    }

    fn edge(a: u128, b: u128) -> Edge {
        Edge {
            from: Uuid::from_u128(a),
            to: Uuid::from_u128(b),
        }
    }

    #[test]
    fn parents_sit_above_children_and_every_node_is_drawn_once() {
        // 1 → 2 → 4, 1 → 3 → 4 (a join), focus 2.
        let g = Lineage {
            nodes: (1..=4).map(node).collect(),
            edges: vec![edge(1, 2), edge(1, 3), edge(2, 4), edge(3, 4)],
            truncated: false,
        };
        let d = generations(&g, Uuid::from_u128(2));
        let at = |n: u128| d[&Uuid::from_u128(n)];
        assert_eq!((at(1), at(2), at(3), at(4)), (-1, 0, 0, 1));
        let svg = draw(&g, Uuid::from_u128(2)).into_string();
        for n in 1..=4u128 {
            let needle = format!("data-id=\"{}\"", Uuid::from_u128(n));
            assert_eq!(svg.matches(&needle).count(), 1, "{n}");
        }
        assert_eq!(svg.matches("<line").count(), 4);
        assert!(svg.contains("focus"));
    }

    #[test]
    fn a_wide_generation_is_cut_and_counted() {
        let mut nodes = vec![node(0)];
        let mut edges = Vec::new();
        for c in 1..=(ROW_SHOWN_MAX as u128 + 5) {
            nodes.push(node(c));
            edges.push(edge(0, c));
        }
        let g = Lineage {
            nodes,
            edges,
            truncated: false,
        };
        let svg = draw(&g, Uuid::from_u128(0)).into_string();
        assert_eq!(svg.matches("<rect").count(), ROW_SHOWN_MAX + 1);
        assert!(svg.contains("+5 more"));
    }
}
