//! The task graph: cycle detection for validation, and the queries the
//! runner and the scheduler make on a parsed pipeline.

use std::collections::{HashMap, HashSet};

use crate::parse::{did_you_mean, quoted_list};
use crate::{Pipeline, Task};

/// Finds a cycle in a graph given as adjacency lists (`edges[i]` are the nodes
/// `i` points to). Returns the nodes of one cycle in order, starting with the
/// lowest-numbered node on it, without repeating the first node at the end.
///
/// Iterative, so a long chain of `needs` cannot overflow the stack.
pub(crate) fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    for root in 0..edges.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // (node, index of the next edge to follow)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let Some(&target) = edges[node].get(*next) else {
                marks[node] = Mark::Done;
                path.pop();
                continue;
            };
            *next += 1;
            if target >= edges.len() {
                continue;
            }
            match marks[target] {
                Mark::New => {
                    marks[target] = Mark::OnPath;
                    path.push((target, 0));
                }
                Mark::OnPath => {
                    let from = path.iter().position(|&(n, _)| n == target).unwrap_or(0);
                    let mut cycle: Vec<usize> = path[from..].iter().map(|&(n, _)| n).collect();
                    let lowest = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|&(_, &n)| n)
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(lowest);
                    return Some(cycle);
                }
                Mark::Done => {}
            }
        }
    }
    None
}

impl Pipeline {
    /// The pipeline restricted to the named tasks and everything they
    /// transitively need, in file order.
    ///
    /// A name is either a task's full name (`test[db=sqlite]`) or the key it
    /// was written under (`test`, selecting every matrix combination). With no
    /// names, the whole pipeline is returned. Unknown names are an error that
    /// names them (with a suggestion when one is close).
    pub fn select(&self, names: &[String]) -> Result<Pipeline, String> {
        if names.is_empty() {
            return Ok(self.clone());
        }
        let mut wanted: HashSet<&str> = HashSet::new();
        let mut unknown: Vec<String> = Vec::new();
        for name in names {
            let matching: Vec<&str> = self
                .tasks
                .iter()
                .filter(|task| task.name == *name || task.base == *name)
                .map(|task| task.name.as_str())
                .collect();
            if matching.is_empty() {
                let candidates = self
                    .tasks
                    .iter()
                    .flat_map(|t| [t.base.as_str(), t.name.as_str()]);
                unknown.push(match did_you_mean(name, candidates) {
                    Some(close) => format!("`{name}` (did you mean `{close}`?)"),
                    None => format!("`{name}`"),
                });
            }
            wanted.extend(matching);
        }
        if !unknown.is_empty() {
            let mut seen = HashSet::new();
            let known: Vec<&str> = self
                .tasks
                .iter()
                .map(|t| t.base.as_str())
                .filter(|base| seen.insert(*base))
                .collect();
            let noun = if unknown.len() == 1 { "task" } else { "tasks" };
            return Err(format!(
                "unknown {noun} {}; the pipeline has: {}",
                unknown.join(", "),
                quoted_list(&known)
            ));
        }
        let by_name: HashMap<&str, &Task> =
            self.tasks.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut stack: Vec<&str> = wanted.iter().copied().collect();
        while let Some(name) = stack.pop() {
            if let Some(task) = by_name.get(name) {
                for need in &task.needs {
                    if wanted.insert(need.as_str()) {
                        stack.push(need.as_str());
                    }
                }
            }
        }
        Ok(Pipeline {
            timeout: self.timeout,
            tasks: self
                .tasks
                .iter()
                .filter(|t| wanted.contains(t.name.as_str()))
                .cloned()
                .collect(),
        })
    }

    /// The names of the tasks that directly need `name` (a full task name),
    /// in file order.
    pub fn dependants(&self, name: &str) -> Vec<&str> {
        self.tasks
            .iter()
            .filter(|task| task.needs.iter().any(|need| need == name))
            .map(|task| task.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::find_cycle;

    #[test]
    fn finds_cycles() {
        assert_eq!(find_cycle(&[vec![1], vec![2], vec![]]), None);
        assert_eq!(
            find_cycle(&[vec![1], vec![2], vec![0]]),
            Some(vec![0, 1, 2])
        );
        assert_eq!(
            find_cycle(&[vec![], vec![2], vec![3], vec![1]]),
            Some(vec![1, 2, 3])
        );
        assert_eq!(find_cycle(&[vec![0]]), Some(vec![0]));
        // A diamond is not a cycle.
        assert_eq!(find_cycle(&[vec![1, 2], vec![3], vec![3], vec![]]), None);
    }

    #[test]
    fn long_chains_do_not_overflow() {
        let n = 100_000;
        let mut edges: Vec<Vec<usize>> = (0..n).map(|i| vec![i + 1]).collect();
        edges[n - 1] = vec![];
        assert_eq!(find_cycle(&edges), None);
        edges[n - 1] = vec![0];
        assert_eq!(find_cycle(&edges).map(|c| c.len()), Some(n));
    }
}
