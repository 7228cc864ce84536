//! Matrix expansion and `${{ matrix.NAME }}` interpolation: turns the checked
//! file model into the [`Pipeline`] the scheduler runs.

use std::collections::{HashMap, HashSet};

use crate::file::{OrderedMap, PipelineFile, Scalar, Sp, TaskFile};
use crate::parse::Report;
use crate::{Artifacts, Build, Event, Pipeline, Reports, Resources, Service, Step, Task, When};

/// Most combinations a task's matrix may have; more is almost always a
/// mistake, and each one is a task the scheduler has to track.
pub(crate) const MAX_COMBINATIONS: usize = 256;

/// Most text the expanded pipeline may hold: matrices multiply the file's
/// content, so this bounds memory whatever the file.
pub(crate) const MAX_EXPANDED_BYTES: usize = 16 << 20;

/// What a string costs beyond its text, for [`MAX_EXPANDED_BYTES`].
const STRING_COST: usize = 32;

/// Longest default step name, in characters, ellipsis included.
const STEP_NAME_CHARS: usize = 60;

/// One matrix combination: (axis, value) pairs in the file's axis order.
pub(crate) type Combination = Vec<(String, String)>;

/// A piece of a string that may contain `${{ matrix.NAME }}` references.
#[derive(Debug, PartialEq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    /// A reference to a matrix axis; `start` is the byte offset of its `${{`.
    Axis {
        name: &'a str,
        start: usize,
    },
}

/// A malformed `${{ … }}`; `start` is the byte offset of its `${{`.
#[derive(Debug, PartialEq)]
pub(crate) struct InterpolationError {
    pub start: usize,
    pub message: String,
}

/// Splits `text` into literal text and matrix references. Only
/// `${{ matrix.NAME }}` (with any whitespace inside the braces) is an
/// expression; everything else, including shell `${VAR}`, is literal.
pub(crate) fn pieces(text: &str) -> Result<Vec<Piece<'_>>, InterpolationError> {
    let mut out = Vec::new();
    let mut rest_start = 0;
    while let Some(found) = text[rest_start..].find("${{") {
        let start = rest_start + found;
        if start > rest_start {
            out.push(Piece::Text(&text[rest_start..start]));
        }
        let body_start = start + 3;
        let Some(body_len) = text[body_start..].find("}}") else {
            return Err(InterpolationError {
                start,
                message: "unterminated `${{`: expected `}}` to close `${{ matrix.NAME }}`".into(),
            });
        };
        let body = text[body_start..body_start + body_len].trim();
        let name = body
            .strip_prefix("matrix.")
            .filter(|name| is_axis_name(name));
        let Some(name) = name else {
            let shown: String = body.chars().take(60).collect();
            return Err(InterpolationError {
                start,
                message: format!(
                    "unsupported expression `${{{{ {shown} }}}}`: only `${{{{ matrix.NAME }}}}` is supported"
                ),
            });
        };
        out.push(Piece::Axis { name, start });
        rest_start = body_start + body_len + 2;
    }
    if rest_start < text.len() {
        out.push(Piece::Text(&text[rest_start..]));
    }
    Ok(out)
}

/// Whether `name` can be a matrix axis (and so follow `matrix.` in `${{ }}`).
pub(crate) fn is_axis_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Replaces matrix references by the combination's values. References to
/// unknown axes were reported by validation; they are left as written.
pub(crate) fn interpolate(text: &str, combination: &[(String, String)]) -> String {
    let Ok(pieces) = pieces(text) else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len());
    for piece in pieces {
        match piece {
            Piece::Text(literal) => out.push_str(literal),
            Piece::Axis { name, start } => {
                match combination.iter().find(|(axis, _)| axis == name) {
                    Some((_, value)) => out.push_str(value),
                    None => {
                        let end = text[start..]
                            .find("}}")
                            .map_or(text.len(), |end| start + end + 2);
                        out.push_str(&text[start..end]);
                    }
                }
            }
        }
    }
    out
}

/// The combinations of a matrix in file order (the last axis varies fastest),
/// or `None` when there are none or too many to expand.
pub(crate) fn combinations(matrix: &OrderedMap<Vec<Scalar>>) -> Option<Vec<Combination>> {
    let count = matrix
        .iter()
        .try_fold(1usize, |count, (_, values)| count.checked_mul(values.len()))?;
    if count == 0 || count > MAX_COMBINATIONS {
        return None;
    }
    let mut combos: Vec<Combination> = vec![Vec::new()];
    for (axis, values) in matrix.iter() {
        combos = combos
            .iter()
            .flat_map(|combo| {
                values.iter().map(move |value| {
                    let mut next = combo.clone();
                    next.push((axis.value().clone(), value.0.value().clone()));
                    next
                })
            })
            .collect();
    }
    Some(combos)
}

/// The name of one expansion: `base[axis=value,axis2=value2]`.
pub(crate) fn expanded_name(base: &str, combination: &[(String, String)]) -> String {
    if combination.is_empty() {
        return base.to_owned();
    }
    let parts: Vec<String> = combination
        .iter()
        .map(|(axis, value)| format!("{axis}={value}"))
        .collect();
    format!("{base}[{}]", parts.join(","))
}

/// A step's name when none is given: the first non-empty line of its script,
/// trimmed and cut to 60 characters.
pub(crate) fn default_step_name(run: &str) -> String {
    let line = run
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("");
    if line.chars().count() <= STEP_NAME_CHARS {
        return line.to_owned();
    }
    let mut name: String = line.chars().take(STEP_NAME_CHARS - 1).collect();
    name.push('…');
    name
}

/// Why a path may not be used for artifacts, reports or builds, if it may not.
pub(crate) fn path_problem(path: &str) -> Option<String> {
    if path.trim().is_empty() {
        return Some("empty path: expected a path relative to the workspace".into());
    }
    let bytes = path.as_bytes();
    let has_drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if path.starts_with('/') || path.starts_with('\\') || path.starts_with('~') || has_drive {
        return Some(format!(
            "absolute path `{path}`: expected a path relative to the workspace"
        ));
    }
    if path.split(['/', '\\']).any(|component| component == "..") {
        return Some(format!(
            "path `{path}` leaves the workspace: `..` is not allowed"
        ));
    }
    None
}

/// Expands every (non-template) task of a checked file. Problems that only
/// show after interpolation (a matrix value making a path absolute) go to
/// `report`, located at the text as written.
pub(crate) fn expand(file: &PipelineFile, report: &mut Report<'_>) -> Pipeline {
    let Some(tasks) = &file.tasks else {
        return Pipeline {
            timeout: None,
            tasks: Vec::new(),
        };
    };
    let runnable: Vec<(&Sp<String>, &TaskFile)> = tasks
        .value()
        .iter()
        .filter(|(name, _)| !is_template(name.value()))
        .collect();

    // The expanded names of each task, for `needs`.
    let mut budget = MAX_EXPANDED_BYTES;
    let mut expansions: Vec<(String, Vec<Combination>)> = Vec::new();
    let mut names_by_base: HashMap<&str, Vec<String>> = HashMap::new();
    for (name, task) in &runnable {
        let combos = match &task.matrix {
            Some(matrix) if !matrix.is_empty() => combinations(matrix).unwrap_or_default(),
            _ => vec![Vec::new()],
        };
        let names: Vec<String> = combos
            .iter()
            .map(|combo| expanded_name(name.value(), combo))
            .collect();
        budget = budget.saturating_sub(names.iter().map(|n| n.len() + STRING_COST).sum());
        names_by_base.insert(name.value().as_str(), names);
        expansions.push((name.value().clone(), combos));
    }

    let mut out = Vec::new();
    for ((name, task), (base, combos)) in runnable.iter().zip(&expansions) {
        let needs = expanded_needs(task, &names_by_base);
        for combo in combos {
            let expanded = expand_task(file, task, base, combo, &needs, report);
            match budget.checked_sub(approximate_size(&expanded)) {
                Some(left) => budget = left,
                None => {
                    report.error(
                        name.at(),
                        format!(
                            "the pipeline is too large once its matrices are expanded: more than {} MiB of tasks by task `{}`",
                            MAX_EXPANDED_BYTES >> 20,
                            expanded.name
                        ),
                    );
                    return Pipeline {
                        timeout: None,
                        tasks: out,
                    };
                }
            }
            out.push(expanded);
        }
    }
    Pipeline {
        timeout: file.timeout.as_ref().map(|t| *t.value()),
        tasks: out,
    }
}

/// Roughly how much memory a task's text takes, for [`MAX_EXPANDED_BYTES`].
fn approximate_size(task: &Task) -> usize {
    let text = |s: &String| s.len() + STRING_COST;
    let pairs =
        |pairs: &[(String, String)]| pairs.iter().map(|(k, v)| text(k) + text(v)).sum::<usize>();
    let strings = |list: &[String]| list.iter().map(text).sum::<usize>();
    text(&task.name)
        + task.image.as_ref().map_or(0, text)
        + task
            .build
            .as_ref()
            .map_or(0, |b| text(&b.dockerfile) + text(&b.context))
        + strings(&task.runs_on)
        + task
            .services
            .iter()
            .map(|s| {
                text(&s.alias)
                    + text(&s.image)
                    + pairs(&s.env)
                    + s.command.as_deref().map_or(0, strings)
            })
            .sum::<usize>()
        + pairs(&task.env)
        + strings(&task.secrets)
        + task
            .steps
            .iter()
            .map(|s| text(&s.name) + text(&s.run))
            .sum::<usize>()
        + strings(&task.needs)
        + task
            .when
            .as_ref()
            .map_or(0, |w| strings(&w.branch) + strings(&w.paths))
        + strings(&task.artifacts.paths)
        + strings(&task.reports.junit)
}

pub(crate) fn is_template(name: &str) -> bool {
    name.starts_with('.')
}

fn expanded_needs(task: &TaskFile, names_by_base: &HashMap<&str, Vec<String>>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut needs: Vec<String> = Vec::new();
    for need in task.needs.iter().flatten() {
        // A need named twice is waited for once.
        if !seen.insert(need.value().as_str()) {
            continue;
        }
        if let Some(names) = names_by_base.get(need.value().as_str()) {
            needs.extend(names.iter().cloned());
        }
    }
    needs
}

fn expand_task(
    file: &PipelineFile,
    task: &TaskFile,
    base: &str,
    combo: &[(String, String)],
    needs: &[String],
    report: &mut Report<'_>,
) -> Task {
    let name = expanded_name(base, combo);
    let text = |value: &Sp<String>| interpolate(value.value(), combo);
    let path = |value: &Sp<String>, report: &mut Report<'_>| {
        let expanded = text(value);
        if let Some(problem) = path_problem(&expanded) {
            let context = if expanded == *value.value() {
                String::new()
            } else {
                format!(" (in task `{name}`)")
            };
            report.error(value.at(), format!("{problem}{context}"));
        }
        expanded
    };

    let build = task.build.as_ref().map(|build| Build {
        dockerfile: build
            .dockerfile
            .as_ref()
            .map_or_else(|| "Dockerfile".to_owned(), |d| path(d, report)),
        context: build
            .context
            .as_ref()
            .map_or_else(|| ".".to_owned(), |c| path(c, report)),
    });
    let artifacts = task
        .artifacts
        .as_ref()
        .map_or_else(Artifacts::default, |artifacts| Artifacts {
            paths: artifacts
                .paths
                .iter()
                .flatten()
                .map(|p| path(p, report))
                .collect(),
            expire_in: artifacts.expire_in.as_ref().map(|e| *e.value()),
        });
    let reports = task
        .reports
        .as_ref()
        .map_or_else(Reports::default, |reports| Reports {
            junit: reports
                .junit
                .iter()
                .flatten()
                .map(|p| path(p, report))
                .collect(),
        });

    let mut env: Vec<(String, String)> = file
        .env
        .iter()
        .flat_map(OrderedMap::iter)
        .map(|(key, value)| (key.value().clone(), value.0.value().clone()))
        .collect();
    let mut positions: HashMap<String, usize> = env
        .iter()
        .enumerate()
        .map(|(i, (key, _))| (key.clone(), i))
        .collect();
    for (key, value) in task.env.iter().flat_map(OrderedMap::iter) {
        let value = text(&value.0);
        match positions.get(key.value()) {
            Some(&i) => env[i].1 = value,
            None => {
                positions.insert(key.value().clone(), env.len());
                env.push((key.value().clone(), value));
            }
        }
    }

    let services = task
        .services
        .iter()
        .flat_map(OrderedMap::iter)
        .map(|(alias, service)| Service {
            alias: alias.value().clone(),
            image: service.image.as_ref().map(text).unwrap_or_default(),
            env: service
                .env
                .iter()
                .flat_map(OrderedMap::iter)
                .map(|(key, value)| (key.value().clone(), text(&value.0)))
                .collect(),
            command: service
                .command
                .as_ref()
                .map(|argv| argv.iter().map(text).collect()),
        })
        .collect();

    let steps = task
        .steps
        .iter()
        .flat_map(|steps| steps.value())
        .map(|step| {
            // A step without `run` is an error of `check`: this pipeline
            // is never returned.
            let run = step.run.as_ref().map(text).unwrap_or_default();
            let name = match &step.name {
                Some(name) => text(name),
                None => default_step_name(&run),
            };
            Step { name, run }
        })
        .collect();

    let mut seen = HashSet::new();
    let secrets: Vec<String> = task
        .secrets
        .iter()
        .flatten()
        .filter(|secret| seen.insert(secret.value().as_str()))
        .map(|secret| secret.value().clone())
        .collect();

    let when = task.when.as_ref().and_then(|when| {
        let branch: Vec<String> = when
            .branch
            .iter()
            .flat_map(|b| &b.0)
            .map(|g| g.value().clone())
            .collect();
        let event: Vec<Event> = when
            .event
            .iter()
            .flat_map(|e| &e.0)
            .filter_map(|e| e.value().parse::<Event>().ok())
            .collect();
        let paths: Vec<String> = when
            .paths
            .iter()
            .flat_map(|p| &p.0)
            .map(|g| g.value().clone())
            .collect();
        (!branch.is_empty() || !event.is_empty() || !paths.is_empty()).then_some(When {
            branch,
            event,
            paths,
        })
    });

    Task {
        name,
        base: base.to_owned(),
        matrix: combo.to_vec(),
        image: task.image.as_ref().map(text),
        build,
        runs_on: task.runs_on.iter().flat_map(|r| &r.0).map(text).collect(),
        services,
        env,
        secrets,
        steps,
        needs: needs.to_vec(),
        when,
        timeout: task.timeout.as_ref().map(|t| *t.value()),
        retry: task.retry.as_ref().map_or(0, |r| *r.value()),
        allow_failure: task.allow_failure.unwrap_or(false),
        resources: Resources {
            cpus: task
                .resources
                .as_ref()
                .and_then(|r| r.cpus.as_ref())
                .map(|c| *c.value()),
            memory_bytes: task
                .resources
                .as_ref()
                .and_then(|r| r.memory.as_ref())
                .map(|m| m.value().0),
        },
        artifacts,
        reports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pieces() {
        assert_eq!(
            pieces("a ${{ matrix.db }}-${{matrix.os}} ${HOME}"),
            Ok(vec![
                Piece::Text("a "),
                Piece::Axis {
                    name: "db",
                    start: 2
                },
                Piece::Text("-"),
                Piece::Axis {
                    name: "os",
                    start: 19
                },
                Piece::Text(" ${HOME}"),
            ])
        );
        assert!(
            pieces("${{ secrets.x }}")
                .unwrap_err()
                .message
                .contains("only `${{ matrix.NAME }}`")
        );
        assert!(
            pieces("x ${{ matrix.db")
                .unwrap_err()
                .message
                .contains("unterminated")
        );
        assert_eq!(pieces("${{ matrix. }}").unwrap_err().start, 0);
    }

    #[test]
    fn interpolates() {
        let combo = vec![("db".to_owned(), "pg".to_owned())];
        assert_eq!(
            interpolate("x-${{ matrix.db }}-${{ matrix.os }}", &combo),
            "x-pg-${{ matrix.os }}"
        );
    }

    #[test]
    fn names_steps_and_expansions() {
        assert_eq!(default_step_name("\n  cargo test  \nmore"), "cargo test");
        let long = "x".repeat(100);
        let name = default_step_name(&long);
        assert_eq!(name.chars().count(), 60);
        assert!(name.ends_with('…'));
        let combo = vec![
            ("db".to_owned(), "pg".to_owned()),
            ("os".to_owned(), "linux".to_owned()),
        ];
        assert_eq!(expanded_name("test", &combo), "test[db=pg,os=linux]");
        assert_eq!(expanded_name("test", &[]), "test");
    }

    #[test]
    fn rejects_escaping_paths() {
        assert!(path_problem("target/release/app").is_none());
        assert!(path_problem("./dist/**").is_none());
        assert!(path_problem("a..b/c").is_none());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "C:\\x",
            "\\\\server\\x",
            "~/x",
            "a\\..\\b",
        ] {
            assert!(path_problem(bad).is_some(), "{bad} should be rejected");
        }
    }
}
