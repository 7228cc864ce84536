//! The task graph of a run as an SVG drawn on the server: one box per task
//! in columns by depth (a task stands right of everything it needs), its
//! status as the box's colour and words, `needs` as edges. Each box links
//! to the task's page, so the graph works with the keyboard too.

use std::collections::HashMap;

use maud::{Markup, html};

/// One task, as the graph draws it.
#[derive(Debug, Clone)]
pub struct Node {
    /// The task's full name (`test[db=sqlite]`).
    pub name: String,
    /// The key under `tasks:` it came from (its name without the matrix).
    pub base: String,
    /// What it needs, by base name.
    pub needs: Vec<String>,
    pub status: String,
    pub duration: Option<String>,
    /// When it started, while it runs: live.js counts its duration on.
    pub running_since: Option<chrono::DateTime<chrono::Utc>>,
    pub href: String,
}

const WIDTH: i64 = 200;
const HEIGHT: i64 = 48;
const GAP_X: i64 = 56;
const GAP_Y: i64 = 14;
const PAD: i64 = 6;
/// Characters of a name that fit a box.
const NAME_FIT: usize = 24;

/// Each node's column: 0 for tasks that need nothing, else one more than
/// the deepest task it needs. A cycle (which the pipeline never has) is
/// cut where it is found.
fn depths(nodes: &[Node]) -> Vec<usize> {
    let mut by_base: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        by_base.entry(node.base.as_str()).or_default().push(i);
        if node.name != node.base {
            by_base.entry(node.name.as_str()).or_default().push(i);
        }
    }
    let mut depth: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut visiting = vec![false; nodes.len()];
    fn visit(
        i: usize,
        nodes: &[Node],
        by_base: &HashMap<&str, Vec<usize>>,
        depth: &mut [Option<usize>],
        visiting: &mut [bool],
    ) -> usize {
        if let Some(d) = depth[i] {
            return d;
        }
        if visiting[i] {
            return 0;
        }
        visiting[i] = true;
        let mut d = 0;
        for need in &nodes[i].needs {
            for &j in by_base.get(need.as_str()).into_iter().flatten() {
                if j != i {
                    d = d.max(visit(j, nodes, by_base, depth, visiting) + 1);
                }
            }
        }
        visiting[i] = false;
        depth[i] = Some(d);
        d
    }
    (0..nodes.len())
        .map(|i| visit(i, nodes, &by_base, &mut depth, &mut visiting))
        .collect()
}

fn truncate(text: &str) -> String {
    if text.chars().count() <= NAME_FIT {
        text.to_string()
    } else {
        let kept: String = text.chars().take(NAME_FIT - 1).collect();
        format!("{kept}…")
    }
}

/// The graph as an inline `<svg>`.
pub fn svg(nodes: &[Node]) -> Markup {
    let depths = depths(nodes);
    let mut rows_in_column: Vec<i64> = Vec::new();
    let mut place = Vec::with_capacity(nodes.len());
    for &d in &depths {
        if rows_in_column.len() <= d {
            rows_in_column.resize(d + 1, 0);
        }
        let row = rows_in_column[d];
        rows_in_column[d] += 1;
        place.push((
            PAD + d as i64 * (WIDTH + GAP_X),
            PAD + row * (HEIGHT + GAP_Y),
        ));
    }
    let columns = rows_in_column.len().max(1) as i64;
    let rows = rows_in_column.iter().copied().max().unwrap_or(1).max(1);
    let width = 2 * PAD + columns * WIDTH + (columns - 1) * GAP_X;
    let height = 2 * PAD + rows * HEIGHT + (rows - 1) * GAP_Y;
    let mut index: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        index.entry(node.base.as_str()).or_default().push(i);
        if node.name != node.base {
            index.entry(node.name.as_str()).or_default().push(i);
        }
    }
    let mut edges = Vec::new();
    for (to, node) in nodes.iter().enumerate() {
        for need in &node.needs {
            for &from in index.get(need.as_str()).into_iter().flatten() {
                if from != to {
                    let (fx, fy) = place[from];
                    let (tx, ty) = place[to];
                    let (x1, y1) = (fx + WIDTH, fy + HEIGHT / 2);
                    let (x2, y2) = (tx, ty + HEIGHT / 2);
                    let bend = GAP_X / 2;
                    edges.push(format!(
                        "M{x1} {y1} C{} {y1}, {} {y2}, {x2} {y2}",
                        x1 + bend,
                        x2 - bend
                    ));
                }
            }
        }
    }
    html! {
        svg.graph xmlns="http://www.w3.org/2000/svg" role="img"
            aria-label=(format!("Task graph of {} tasks", nodes.len()))
            viewBox=(format!("0 0 {width} {height}")) width=(width) height=(height) {
            @for d in &edges {
                path.edge d=(d) {}
            }
            @for (node, (x, y)) in nodes.iter().zip(&place) {
                a href=(node.href) {
                    g class=(format!("node s-{}", node.status)) {
                        title { (node.name) ": " (node.status) }
                        rect x=(x) y=(y) width=(WIDTH) height=(HEIGHT) rx="6" {}
                        text.name x=(x + 10) y=(y + 20) { (truncate(&node.name)) }
                        text.meta x=(x + 10) y=(y + 38) {
                            (node.status)
                            @if let Some(duration) = &node.duration {
                                " · "
                                @if let Some(since) = node.running_since {
                                    tspan data-since=(since.to_rfc3339()) { (duration) }
                                } @else {
                                    (duration)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, base: &str, needs: &[&str]) -> Node {
        Node {
            name: name.into(),
            base: base.into(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
            status: "success".into(),
            duration: Some("1s".into()),
            running_since: None,
            href: format!("/t/{name}"),
        }
    }

    #[test]
    fn needs_become_columns_and_edges() {
        let nodes = [
            node("build", "build", &[]),
            node("test[a=1]", "test", &["build"]),
            node("test[a=2]", "test", &["build"]),
            node("deploy", "deploy", &["test"]),
        ];
        assert_eq!(depths(&nodes), [0, 1, 1, 2]);
        let svg = svg(&nodes).into_string();
        assert_eq!(svg.matches("class=\"edge\"").count(), 4, "{svg}");
        assert!(svg.contains("href=\"/t/deploy\""));
        assert!(svg.contains("node s-success"));
        assert!(svg.contains("test[a=1]: success"));
    }

    #[test]
    fn a_cycle_does_not_hang() {
        let nodes = [node("a", "a", &["b"]), node("b", "b", &["a"])];
        assert_eq!(depths(&nodes).len(), 2);
    }
}
