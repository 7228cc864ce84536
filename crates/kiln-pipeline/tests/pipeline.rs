//! Parsing `.kiln.yml`: located errors for malformed files, the expanded model
//! for good ones, bounded behaviour on hostile input, and property tests.

use std::time::{Duration as StdDuration, Instant};

use kiln_pipeline::{Diagnostics, Event, MAX_PIPELINE_BYTES, Pipeline, parse};
use proptest::prelude::*;

const FILE: &str = ".kiln.yml";

/// The example of DESIGN.md §2, verbatim.
const DESIGN_EXAMPLE: &str = r#"version: 1
timeout: 1h                     # umbrella timeout for the whole run
env: { CARGO_TERM_COLOR: always }
tasks:
  lint:
    image: rust:1.83
    steps:
      - run: cargo clippy -- -D warnings
  test:
    image: rust:1.83            # or: build: { dockerfile: ci/Dockerfile, context: . }
    runs-on: [linux]            # agent labels that must all match
    matrix: { db: [postgres, sqlite] }
    services:                   # sidecars on a private per-task network, reached by alias
      postgres: { image: postgres:16, env: { POSTGRES_PASSWORD: pw } }   # also: command: [argv]
    env: { DB: "${{ matrix.db }}" }
    secrets: [CRATES_TOKEN]     # must exist for this job, else the run fails with a clear error
    steps:
      - name: test
        run: cargo test -- -Z unstable-options --format junit > report.xml
    timeout: 20m
    retry: 1                    # automatic retries on failure or lost agent
    resources: { cpus: 2, memory: 2g }
    artifacts: { paths: ["target/release/app"], expire-in: 30d }
    reports: { junit: ["report.xml"] }
  deploy:
    needs: [lint, test]
    when: { branch: [main], event: [push] }
    allow-failure: false
    steps:
      - run: ./deploy.sh
"#;

fn ok(text: &str) -> Pipeline {
    match parse(FILE, text) {
        Ok(pipeline) => pipeline,
        Err(diagnostics) => {
            panic!("expected a valid pipeline, got:\n{diagnostics}\n--- in:\n{text}")
        }
    }
}

fn err(text: &str) -> Diagnostics {
    match parse(FILE, text) {
        Ok(pipeline) => panic!(
            "expected errors, got {} tasks for:\n{text}",
            pipeline.tasks.len()
        ),
        Err(diagnostics) => diagnostics,
    }
}

/// A minimal valid file with `task` as the body of task `a`.
fn one_task(body: &str) -> String {
    format!("version: 1\ntasks:\n  a:\n{body}")
}

/// The properties every error must have, whatever the input.
fn assert_well_located(text: &str, diagnostics: &Diagnostics) {
    assert!(!diagnostics.0.is_empty(), "empty diagnostics for {text:?}");
    let last_line = text.lines().count() as u64 + 1;
    for d in &diagnostics.0 {
        assert_eq!(d.file, FILE);
        assert!(d.line >= 1 && d.column >= 1, "{d} for {text:?}");
        assert!(
            d.line <= last_line,
            "{d} is past line {last_line} for {text:?}"
        );
        assert!(!d.message.is_empty(), "{d} for {text:?}");
    }
}

#[test]
fn malformed_files_are_located() {
    let long_name = "x".repeat(65);
    let long_name_file = format!("version: 1\ntasks:\n  {long_name}:\n    steps: [x]\n");
    let cases: Vec<(String, u64, u64, &str)> = vec![
        // The shape of the file.
        ("".into(), 1, 1, "the pipeline file is empty"),
        ("# only a comment\n".into(), 1, 1, "the pipeline file is empty"),
        ("hello\n".into(), 1, 1, "expected a mapping with `version: 1` and `tasks` at the top level"),
        ("- a\n- b\n".into(), 1, 1, "at the top level, found a list"),
        ("tasks:\n  a:\n    steps: [x]\n".into(), 1, 1, "missing or empty `version`: expected `version: 1`"),
        ("version: 2\ntasks:\n  a:\n    steps: [x]\n".into(), 1, 10, "unsupported `version: 2`: expected `version: 1`"),
        ("version: 1\n".into(), 1, 1, "missing or empty `tasks`"),
        ("version: 1\ntasks: {}\n".into(), 2, 8, "`tasks` is empty"),
        ("version: 1\ntasks:\n  a: x\n".into(), 3, 6, "expected a mapping"),
        ("version: 1\nversion: 1\ntasks: {}\n".into(), 2, 1, "duplicate key `version`"),
        ("version: 1\ntasks:\n  a:\n    steps: [x]\n---\nfoo: 1\n".into(), 5, 1, "expected a single YAML document"),
        // Syntax errors.
        (one_task("    steps: [x\n"), 4, 12, "unclosed bracket"),
        (one_task("    steps:\n      - run: 'unterminated\n"), 6, 1, "is a closing quote missing?"),
        (one_task("    steps: [x]\n    env: *nope\n"), 5, 10, "unknown alias"),
        // Unknown keys, with and without a suggestion.
        ("version: 1\ntasks:\n  a:\n    imgae: x\n".into(), 4, 5, "unknown key `imgae`: did you mean `image`?"),
        (one_task("    steps:\n      - nmae: x\n        run: y\n"), 5, 9, "did you mean `name`?"),
        (one_task("    depends_on: [b]\n    steps: [x]\n"), 4, 5, "did you mean `needs`?"),
        (one_task("    steps: [x]\n    zzz: 1\n"), 5, 5, "expected one of `image`, `build`, `runs-on`"),
        ("version: 1\ntask:\n  a:\n    steps: [x]\n".into(), 2, 1, "did you mean `tasks`?"),
        (one_task("    steps: [x]\n    build: { dockerfiel: x }\n"), 5, 14, "did you mean `dockerfile`?"),
        // Types and values.
        (one_task("    image: [x]\n    steps: [x]\n"), 4, 12, "expected a string, found a list"),
        (one_task("    steps: x\n"), 4, 12, "expected a list, found `x`"),
        (one_task("    steps: [x, [y]]\n"), 4, 16, "expected a step: a shell script string, or a mapping with `run`"),
        (one_task("    steps:\n      - name: x\n"), 5, 9, "missing required key `run`"),
        (one_task("    steps:\n      - run:\n"), 5, 12, "expected a string, found an empty value"),
        (one_task("    timeout: 5x\n    steps: [x]\n"), 4, 14, "expected a duration like `30s`"),
        ("version: 1\ntimeout: 0s\ntasks:\n  a:\n    steps: [x]\n".into(), 2, 10, "`timeout` must be longer than zero"),
        (one_task("    resources: { memory: 2q }\n    steps: [x]\n"), 4, 26, "expected a memory size like `512m`"),
        (one_task("    resources: { memory: 0 }\n    steps: [x]\n"), 4, 26, "greater than zero"),
        (one_task("    resources: { cpus: -1 }\n    steps: [x]\n"), 4, 24, "`cpus` must be a positive number"),
        (one_task("    resources: { cpus: 0 }\n    steps: [x]\n"), 4, 24, "`cpus` must be a positive number"),
        (one_task("    retry: 11\n    steps: [x]\n"), 4, 12, "`retry: 11` is too many: at most 10"),
        (one_task("    retry: -1\n    steps: [x]\n"), 4, 12, "expected a whole number"),
        (one_task("    allow-failure: yes\n    steps: [x]\n"), 4, 20, "expected `true` or `false`, found `yes`"),
        (one_task("    when: { event: [pushh] }\n    steps: [x]\n"), 4, 21, "unknown event `pushh`: did you mean `push`?"),
        (one_task("    when: { event: [deploy] }\n    steps: [x]\n"), 4, 21, "expected one of `push`, `pull_request`, `tag`, `cron`, `manual`, `api`"),
        (one_task("    when: { event: pul_request }\n    steps: [x]\n"), 4, 20, "did you mean `pull_request`?"),
        ("version: 1\ntasks:\n  a:\n".into(), 3, 4, "expected a mapping, found an empty value"),
        (one_task("    when: { branch: [''] }\n    steps: [x]\n"), 4, 22, "empty branch glob"),
        // Tasks and steps.
        (one_task("    image: x\n"), 3, 3, "task `a` has no `steps`"),
        (one_task("    steps: []\n"), 4, 12, "task `a` has no steps"),
        (one_task("    steps:\n      - run: ''\n"), 5, 14, "empty `run`"),
        (one_task("    steps:\n      - '   '\n"), 5, 9, "empty `run`"),
        (one_task("    image: x\n    build: {}\n    steps: [x]\n"), 4, 12, "either `image` or `build`, not both"),
        (one_task("    image: ''\n    steps: [x]\n"), 4, 12, "empty `image`"),
        ("version: 1\ntasks:\n  a b:\n    steps: [x]\n".into(), 3, 3, "invalid task name `a b`"),
        ("version: 1\ntasks:\n  -a:\n    steps: [x]\n".into(), 3, 3, "invalid task name `-a`"),
        (long_name_file, 3, 3, "at most 64 characters"),
        ("version: 1\ntasks:\n  .t:\n    steps: [x]\n".into(), 3, 3, "every task is a template"),
        (one_task("    runs-on: [linux, 'a b']\n    steps: [x]\n"), 4, 22, "invalid agent label `a b`"),
        // Needs and the graph.
        ("version: 1\ntasks:\n  a:\n    needs: [tset]\n    steps: [x]\n  test:\n    steps: [x]\n".into(), 4, 13, "`needs` names unknown task `tset`: did you mean `test`?"),
        ("version: 1\ntasks:\n  a:\n    needs: [zzz]\n    steps: [x]\n  b:\n    steps: [x]\n".into(), 4, 13, "expected one of `b`"),
        (one_task("    needs: [a]\n    steps: [x]\n"), 4, 13, "task `a` needs itself"),
        (
            "version: 1\ntasks:\n  a:\n    needs: [b]\n    steps: [x]\n  b:\n    needs: [c]\n    steps: [x]\n  c:\n    needs: [a]\n    steps: [x]\n".into(),
            4,
            13,
            "cycle in `needs`: a → b → c → a",
        ),
        (
            "version: 1\ntasks:\n  x:\n    steps: [x]\n  b:\n    needs: [x, c]\n    steps: [x]\n  c:\n    needs: [b]\n    steps: [x]\n".into(),
            6,
            16,
            "cycle in `needs`: b → c → b",
        ),
        ("version: 1\ntasks:\n  a:\n    steps: [x]\n  a:\n    steps: [y]\n".into(), 5, 3, "duplicate key `a`"),
        // Names of variables, secrets and services.
        (one_task("    secrets: [1TOKEN]\n    steps: [x]\n"), 4, 15, "invalid secret name `1TOKEN`"),
        (one_task("    secrets: [KILN_TOKEN]\n    steps: [x]\n"), 4, 15, "secret name `KILN_TOKEN` is reserved"),
        (one_task("    env: { KILN_X: 1 }\n    steps: [x]\n"), 4, 12, "environment variable `KILN_X` is reserved"),
        (one_task("    env: { CI: 'false' }\n    steps: [x]\n"), 4, 12, "environment variable `CI` is reserved"),
        ("version: 1\nenv: { KILN: x }\ntasks:\n  a:\n    steps: [x]\n".into(), 2, 8, "`KILN` is reserved"),
        (one_task("    env: { a-b: 1 }\n    steps: [x]\n"), 4, 12, "invalid environment variable name `a-b`"),
        (one_task("    env: { TOKEN: x }\n    secrets: [TOKEN]\n    steps: [x]\n"), 5, 15, "`TOKEN` is both in `env` and in `secrets`"),
        (one_task("    image: !custom x\n    steps: [x]\n"), 4, 20, "unsupported YAML tag `!custom`"),
        (one_task("    env: { A: 1, A: 2 }\n    steps: [x]\n"), 4, 18, "duplicate key `A`"),
        (one_task("    services: { Postgres: { image: pg } }\n    steps: [x]\n"), 4, 17, "invalid service name `Postgres`"),
        (one_task("    services: { pg: { env: {} } }\n    steps: [x]\n"), 4, 17, "service `pg` has no `image`"),
        // Matrix.
        (one_task("    matrix: { db: [] }\n    steps: [x]\n"), 4, 15, "matrix axis `db` has no values"),
        (one_task("    matrix: {}\n    steps: [x]\n"), 3, 3, "`matrix` of task `a` is empty"),
        (
            one_task("    matrix: { a: [1,2,3,4,5,6,7,8,9], b: [1,2,3,4,5,6,7,8,9], c: [1,2,3,4] }\n    steps: [x]\n"),
            4,
            15,
            "has 324 combinations: at most 256",
        ),
        (one_task("    matrix: { db: [a, a] }\n    steps: [x]\n"), 4, 23, "duplicate value `a` in matrix axis `db`"),
        (one_task("    matrix: { db: ['x,y'] }\n    steps: [x]\n"), 4, 20, "invalid matrix value `x,y`"),
        // Interpolation.
        (one_task("    matrix: { db: [pg] }\n    steps: ['echo ${{ matrix.dbb }}']\n"), 5, 19, "unknown matrix axis `dbb`: did you mean `db`?"),
        (one_task("    matrix: { db: [pg] }\n    steps: ['echo ${{ matrix.zzzzzz }}']\n"), 5, 19, "task `a` has `db`"),
        (one_task("    steps: ['echo ${{ matrix.db }}']\n"), 4, 19, "`${{ matrix.db }}` is used in task `a`, which has no `matrix`"),
        (
            one_task("    steps:\n      - run: |\n          echo hi\n          echo ${{ secrets.X }}\n"),
            7,
            16,
            "unsupported expression `${{ secrets.X }}`: only `${{ matrix.NAME }}` is supported",
        ),
        (one_task("    matrix: { db: [pg] }\n    image: 'x:${{ matrix.db'\n    steps: [x]\n"), 5, 15, "unterminated `${{`"),
        (
            one_task("    matrix: { db: [pg] }\n    env: { A: \"${{ matrix.db }} ${{ matrix.os }}\" }\n    steps: [x]\n"),
            5,
            33,
            "unknown matrix axis `os`",
        ),
        ("version: 1\nenv: { A: '${{ matrix.x }}' }\ntasks:\n  a:\n    steps: [x]\n".into(), 2, 12, "not available in the pipeline's `env`"),
        // Paths.
        (one_task("    steps: [x]\n    artifacts: { paths: [/etc/passwd] }\n"), 5, 26, "absolute path `/etc/passwd`"),
        (one_task("    steps: [x]\n    reports: { junit: [a/../../b] }\n"), 5, 24, "`..` is not allowed"),
        (one_task("    steps: [x]\n    build: { context: .. }\n"), 5, 23, "`..` is not allowed"),
        (
            one_task("    matrix: { dir: ['..'] }\n    steps: [x]\n    artifacts: { paths: ['${{ matrix.dir }}/x'] }\n"),
            6,
            26,
            "path `../x` leaves the workspace: `..` is not allowed (in task `a[dir=..]`)",
        ),
    ];
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (text, line, column, message) in &cases {
        let diagnostics = err(text);
        assert_well_located(text, &diagnostics);
        let matching = diagnostics
            .0
            .iter()
            .any(|d| d.line == *line && d.column == *column && d.message.contains(message));
        if !matching {
            failures.push(format!(
                "expected {line}:{column} containing {message:?}\n  got:\n{diagnostics}\n  in:\n{text}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn several_semantic_errors_are_reported_together() {
    let text = "version: 1\ntasks:\n  a:\n    needs: [nope]\n    env: { KILN_X: 1 }\n    steps: [x]\n  b c:\n    image: x\n";
    let diagnostics = err(text);
    let located: Vec<(u64, u64)> = diagnostics.0.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(
        located,
        vec![(4, 13), (5, 12), (7, 3), (7, 3)],
        "{diagnostics}"
    );
    assert!(diagnostics.to_string().starts_with(".kiln.yml:4:13: "));
}

/// Each diagnostic as `line:column: message`, for comparing whole reports.
fn lines(diagnostics: &Diagnostics) -> Vec<String> {
    diagnostics
        .0
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect()
}

/// The 1-based line and column of the first occurrence of `needle`.
fn position(text: &str, needle: &str) -> (u64, u64) {
    let offset = text.find(needle).expect("needle in text");
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() as u64 + 1,
        before[line_start..].chars().count() as u64 + 1,
    )
}

#[test]
fn an_unknown_key_does_not_hide_other_errors() {
    let text = "version: 1\ntasks:\n  a:\n    imgae: busybox\n    steps: [echo hi]\n  b:\n    needs: [nope]\n    steps: [echo hi]\n";
    assert_eq!(
        lines(&err(text)),
        [
            "4:5: unknown key `imgae`: did you mean `image`?",
            "7:13: `needs` names unknown task `nope`: expected one of `a`",
        ]
    );
}

#[test]
fn every_unknown_key_is_reported_with_the_other_errors() {
    // Block and flow mappings, at every level, in templates, before and
    // after the other errors; and a cycle in what remains.
    let text = r#"verison: 1
version: 1
env: { A: 1 }
tasks:
  .t: &t
    imagee: x
    env: { T: 1 }
  a:
    <<: *t
    needs: [b]
    steps:
      - run: echo
        nmae: x
      - { rnu: echo, run: echo }
    build: { dockerfiel: x, context: .., contxt: y }
    services:
      pg: { image: postgres, evn: {} }
    when: { brnach: main }
    resources:
      cpu: 2
      memory: 1g
  b:
    needs: [a]
    steps: [x]
    artifact: { paths: [x] }
    env: { KILN_X: 1 }
"#;
    let diagnostics = err(text);
    assert_well_located(text, &diagnostics);
    let at = |needle: &str, message: &str| {
        let (line, column) = position(text, needle);
        format!("{line}:{column}: {message}")
    };
    assert_eq!(
        lines(&diagnostics),
        [
            at("verison", "unknown key `verison`: did you mean `version`?"),
            at("imagee", "unknown key `imagee`: did you mean `image`?"),
            at("b]", "cycle in `needs`: a → b → a"),
            at("nmae", "unknown key `nmae`: did you mean `name`?"),
            at("rnu", "unknown key `rnu`: did you mean `run`?"),
            at(
                "dockerfiel",
                "unknown key `dockerfiel`: did you mean `dockerfile`?"
            ),
            at("..", "path `..` leaves the workspace: `..` is not allowed"),
            at("contxt", "unknown key `contxt`: did you mean `context`?"),
            at("evn", "unknown key `evn`: did you mean `env`?"),
            at("brnach", "unknown key `brnach`: did you mean `branch`?"),
            at("cpu:", "unknown key `cpu`: did you mean `cpus`?"),
            at(
                "artifact:",
                "unknown key `artifact`: did you mean `artifacts`?"
            ),
            at(
                "KILN_X",
                "environment variable `KILN_X` is reserved: Kiln sets `CI`, `KILN` and `KILN_*` itself"
            ),
        ]
    );
}

#[test]
fn a_misspelt_required_key_is_not_also_reported_missing() {
    let only = |text: &str, expected: &[&str]| {
        let diagnostics = err(text);
        assert_well_located(text, &diagnostics);
        assert_eq!(lines(&diagnostics), expected, "for:\n{text}");
    };
    // Misspelt, or written under another CI system's name: the suggestion
    // says what to do, and nothing is missing once it is followed.
    only(
        "verison: 1\ntasks:\n  a:\n    steps: [x]\n",
        &["1:1: unknown key `verison`: did you mean `version`?"],
    );
    only(
        "version: 1\ntask:\n  a:\n    steps: [x]\n",
        &["2:1: unknown key `task`: did you mean `tasks`?"],
    );
    only(
        "version: 1\ntasks:\n  a:\n    image: x\n    stpes: [x]\n",
        &["5:5: unknown key `stpes`: did you mean `steps`?"],
    );
    only(
        "version: 1\ntasks:\n  a:\n    script: [x]\n",
        &["4:5: unknown key `script`: did you mean `steps`?"],
    );
    only(
        "version: 1\ntasks:\n  a:\n    steps:\n      - rnu: make\n      - { name: x, rnu: y }\n",
        &[
            "5:9: unknown key `rnu`: did you mean `run`?",
            "6:20: unknown key `rnu`: did you mean `run`?",
        ],
    );
    only(
        "version: 1\ntasks:\n  a:\n    steps: [x]\n    services:\n      pg:\n        imgae: postgres\n",
        &["7:9: unknown key `imgae`: did you mean `image`?"],
    );
    // In a template, the key is missing from every task that uses it.
    only(
        "version: 1\ntasks:\n  .t: &t\n    stesp: [x]\n  a:\n    <<: *t\n",
        &["4:5: unknown key `stesp`: did you mean `steps`?"],
    );
    // But a key that is missing is reported when the unknown key is not
    // taken for it, or is in another mapping.
    only(
        "version: 1\ntasks:\n  a:\n    imgae: x\n",
        &[
            "3:3: task `a` has no `steps`: expected a list like `steps: [{ run: make test }]`",
            "4:5: unknown key `imgae`: did you mean `image`?",
        ],
    );
    only(
        "version: 1\ntasks:\n  a:\n    steps:\n      - { nmae: x }\n",
        &[
            "5:9: missing required key `run`: expected the step's shell script, like `run: make test`",
            "5:11: unknown key `nmae`: did you mean `name`?",
        ],
    );
    only(
        "version: 1\ntasks:\n  a:\n    stpes: [x]\n  b:\n    image: x\n",
        &[
            "4:5: unknown key `stpes`: did you mean `steps`?",
            "5:3: task `b` has no `steps`: expected a list like `steps: [{ run: make test }]`",
        ],
    );
    // A step without `run` no longer stops at deserializing.
    only(
        "version: 1\ntasks:\n  a:\n    needs: [zz]\n    steps:\n      - name: x\n",
        &[
            "4:13: `needs` names unknown task `zz`: the pipeline has no other task",
            "6:9: missing required key `run`: expected the step's shell script, like `run: make test`",
        ],
    );
}

#[test]
fn unknown_keys_are_reported_up_to_a_syntax_or_type_error() {
    let text = "version: 1\ntasks:\n  a:\n    imgae: x\n    steps: [x]\n  b:\n    retry: -1\n    stesp: [x]\n  c:\n    needs: [zz]\n    steps: [x]\n";
    assert_eq!(
        lines(&err(text)),
        [
            "4:5: unknown key `imgae`: did you mean `image`?",
            "7:12: expected a whole number (0 or more), found `-1`",
        ]
    );
    let text = "version: 1\ntasks:\n  a:\n    imgae: x\n    steps: [x\n";
    let diagnostics = lines(&err(text));
    assert_eq!(diagnostics.len(), 2, "{diagnostics:?}");
    assert_eq!(
        diagnostics[0],
        "4:5: unknown key `imgae`: did you mean `image`?"
    );
    assert!(
        diagnostics[1].contains("unclosed bracket"),
        "{diagnostics:?}"
    );
}

#[test]
fn locations_after_blanked_keys_are_unchanged() {
    // The blanked value has multi-byte characters, and an error follows on
    // the same line: columns count characters, as in the file.
    let text = "version: 1\ntasks:\n  a:\n    steps: [x]\n    build: { dockerfiel: 'é€😀', context: .., contxt: ü }\n    needs: [é]\n";
    let diagnostics = err(text);
    let at = |needle: &str| position(text, needle);
    let located: Vec<(u64, u64)> = diagnostics.0.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(
        located,
        [at("dockerfiel"), at(".."), at("contxt"), at("é]")],
        "{diagnostics}"
    );
}

#[test]
fn blanking_unknown_keys_is_bounded() {
    // Hundreds of unknown keys: some are reported, quickly, and nothing
    // else (the rest of the file was not deserialized).
    let mut text = String::from("version: 1\ntasks:\n");
    for i in 0..500 {
        text.push_str(&format!(
            "  t{i}:\n    imgae: x\n    needs: [zz]\n    steps: [x]\n"
        ));
    }
    let diagnostics = assert_rejected_quickly(&text, StdDuration::from_secs(10));
    assert!(
        (20..=51).contains(&diagnostics.0.len()),
        "{}",
        diagnostics.0.len()
    );
    assert!(
        diagnostics
            .0
            .iter()
            .all(|d| d.message.starts_with("unknown key `imgae`")),
        "{diagnostics}"
    );

    // Unknown keys at the end of a large file: rereading it is bounded.
    let mut text = String::from("version: 1\ntasks:\n");
    let mut i = 0;
    while text.len() < MAX_PIPELINE_BYTES - 1_000 {
        // Long steps: few values, for the parser's budget.
        text.push_str(&format!("  t{i}:\n    steps: [echo {i}{:>100}]\n", "."));
        i += 1;
    }
    for j in 0..10 {
        text.push_str(&format!("  u{j}:\n    imgae: x\n    steps: [x]\n"));
    }
    assert!(text.len() <= MAX_PIPELINE_BYTES);
    let diagnostics = assert_rejected_quickly(&text, StdDuration::from_secs(15));
    assert!(
        diagnostics
            .0
            .iter()
            .all(|d| d.message.starts_with("unknown key `imgae`")),
        "{diagnostics}"
    );
}

/// The user documentation of the file format.
const PIPELINE_DOCS: &str = include_str!("../../../docs/pipeline.md");

#[test]
fn the_documented_errors_are_reported_together() {
    let errors = &PIPELINE_DOCS[PIPELINE_DOCS.find("\n## Errors\n").expect("§ Errors")..];
    let block = |after: &str| {
        let start = errors.find(after).expect(after) + after.len();
        let len = errors[start..].find("```\n").expect("end of block");
        &errors[start..start + len]
    };
    let (file, output) = (block("```yaml\n"), block("gives:\n\n```\n"));
    assert_eq!(err(file).to_string() + "\n", output, "for:\n{file}");
    assert_eq!(output.lines().count(), 3);
}

#[test]
fn suggested_needs_are_tasks_that_can_be_needed() {
    let message = |text: &str| {
        let diagnostics = err(text);
        assert_eq!(diagnostics.0.len(), 1, "{diagnostics}");
        diagnostics.0[0].message.clone()
    };
    // Not the task itself.
    let text =
        "version: 1\ntasks:\n  y:\n    steps: [x]\n  z:\n    needs: [y, zz]\n    steps: [x]\n";
    assert_eq!(
        message(text),
        "`needs` names unknown task `zz`: expected one of `y`"
    );
    // Not a task it already needs.
    let text =
        "version: 1\ntasks:\n  y:\n    steps: [x]\n  z:\n    needs: [y, yy]\n    steps: [x]\n";
    assert_eq!(
        message(text),
        "`needs` names unknown task `yy`: expected one of `y`"
    );
    // Not a task that needs it, even through others: that is a cycle.
    let text = "version: 1\ntasks:\n  a:\n    needs: [bb]\n    steps: [x]\n  b:\n    needs: [c]\n    steps: [x]\n  c:\n    needs: [a]\n    steps: [x]\n";
    assert_eq!(
        message(text),
        "`needs` names unknown task `bb`: expected one of `b`, `c`"
    );
    // Otherwise, the closest task.
    let text = "version: 1\ntasks:\n  a:\n    needs: [bb]\n    steps: [x]\n  b:\n    steps: [x]\n  c:\n    needs: [a]\n    steps: [x]\n";
    assert_eq!(
        message(text),
        "`needs` names unknown task `bb`: did you mean `b`?"
    );
}

#[test]
fn oversized_input_is_rejected_before_parsing() {
    let text = format!("version: 1\n#{}\n", "x".repeat(MAX_PIPELINE_BYTES));
    let diagnostics = err(&text);
    assert_eq!(diagnostics.0.len(), 1);
    assert_eq!((diagnostics.0[0].line, diagnostics.0[0].column), (1, 1));
    assert!(diagnostics.0[0].message.contains("too large"));
}

#[test]
fn design_example_parses_and_expands() {
    let pipeline = ok(DESIGN_EXAMPLE);
    assert_eq!(
        pipeline.timeout.map(|t| t.to_string()).as_deref(),
        Some("1h")
    );
    let names: Vec<&str> = pipeline.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["lint", "test[db=postgres]", "test[db=sqlite]", "deploy"]
    );

    let lint = pipeline.task("lint").expect("lint");
    assert_eq!(lint.image.as_deref(), Some("rust:1.83"));
    assert_eq!(lint.steps[0].name, "cargo clippy -- -D warnings");
    assert_eq!(
        lint.env,
        [("CARGO_TERM_COLOR".to_owned(), "always".to_owned())]
    );
    assert!(lint.needs.is_empty());

    for (name, db) in [
        ("test[db=postgres]", "postgres"),
        ("test[db=sqlite]", "sqlite"),
    ] {
        let test = pipeline.task(name).expect(name);
        assert_eq!(test.base, "test");
        assert_eq!(test.matrix, [("db".to_owned(), db.to_owned())]);
        assert_eq!(
            test.env,
            [
                ("CARGO_TERM_COLOR".to_owned(), "always".to_owned()),
                ("DB".to_owned(), db.to_owned())
            ]
        );
        assert_eq!(test.runs_on, ["linux"]);
        assert_eq!(test.secrets, ["CRATES_TOKEN"]);
        assert_eq!(test.services.len(), 1);
        assert_eq!(test.services[0].alias, "postgres");
        assert_eq!(test.services[0].image, "postgres:16");
        assert_eq!(
            test.services[0].env,
            [("POSTGRES_PASSWORD".to_owned(), "pw".to_owned())]
        );
        assert_eq!(test.services[0].command, None);
        assert_eq!(test.steps.len(), 1);
        assert_eq!(test.steps[0].name, "test");
        assert_eq!(
            test.steps[0].run,
            "cargo test -- -Z unstable-options --format junit > report.xml"
        );
        assert_eq!(test.timeout.map(|t| t.to_string()).as_deref(), Some("20m"));
        assert_eq!(test.retry, 1);
        assert_eq!(test.resources.cpus, Some(2.0));
        assert_eq!(test.resources.memory_bytes, Some(2 << 30));
        assert_eq!(test.artifacts.paths, ["target/release/app"]);
        assert_eq!(
            test.artifacts.expire_in.map(|t| t.to_string()).as_deref(),
            Some("30d")
        );
        assert_eq!(test.reports.junit, ["report.xml"]);
        assert!(!test.allow_failure);
    }

    let deploy = pipeline.task("deploy").expect("deploy");
    assert_eq!(
        deploy.needs,
        ["lint", "test[db=postgres]", "test[db=sqlite]"]
    );
    assert_eq!(deploy.image, None);
    let when = deploy.when.as_ref().expect("when");
    assert_eq!(when.branch, ["main"]);
    assert_eq!(when.event, [Event::Push]);
    assert!(when.matches(Some("main"), Event::Push));
    assert!(!when.matches(Some("dev"), Event::Push));
    assert_eq!(deploy.steps[0].name, "./deploy.sh");
    assert_eq!(pipeline.dependants("test[db=sqlite]"), ["deploy"]);
    assert_eq!(pipeline.dependants("lint"), ["deploy"]);
    assert!(pipeline.dependants("deploy").is_empty());
}

#[test]
fn select_keeps_needs_and_file_order() {
    let pipeline = ok(DESIGN_EXAMPLE);
    let names = |p: &Pipeline| p.tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let deploy = pipeline.select(&["deploy".into()]).expect("select deploy");
    assert_eq!(
        names(&deploy),
        ["lint", "test[db=postgres]", "test[db=sqlite]", "deploy"]
    );
    let test = pipeline.select(&["test".into()]).expect("select test");
    assert_eq!(names(&test), ["test[db=postgres]", "test[db=sqlite]"]);
    let one = pipeline
        .select(&["test[db=sqlite]".into(), "lint".into()])
        .expect("select one");
    assert_eq!(names(&one), ["lint", "test[db=sqlite]"]);
    assert_eq!(pipeline.select(&[]).expect("select all"), pipeline);
    let error = pipeline
        .select(&["tset".into(), "zzz".into()])
        .expect_err("unknown");
    assert!(error.contains("`tset` (did you mean `test`?)"), "{error}");
    assert!(error.contains("`zzz`"), "{error}");
}

#[test]
fn step_shorthand_and_default_names() {
    let long = format!("echo {}", "y".repeat(100));
    let text = format!(
        "version: 1\ntasks:\n  a:\n    steps:\n      - make test\n      - |\n\n          cargo build\n          cargo test\n      - {long}\n      - name: named\n        run: true\n"
    );
    let pipeline = ok(&text);
    let steps = &pipeline.tasks[0].steps;
    assert_eq!(steps.len(), 4);
    assert_eq!(
        (steps[0].name.as_str(), steps[0].run.as_str()),
        ("make test", "make test")
    );
    assert_eq!(steps[1].name, "cargo build");
    assert_eq!(steps[1].run, "\ncargo build\ncargo test\n");
    assert_eq!(steps[2].name.chars().count(), 60);
    assert!(steps[2].name.starts_with("echo yyy") && steps[2].name.ends_with('…'));
    assert_eq!(
        (steps[3].name.as_str(), steps[3].run.as_str()),
        ("named", "true")
    );
}

#[test]
fn env_values_keep_their_text_and_tasks_win() {
    let text = "version: 1\nenv: { A: 1, B: top, C: 1.10 }\ntasks:\n  a:\n    env: { B: true, D: 3.0, E: 0x1F, F: '' }\n    steps: [x]\n";
    let pipeline = ok(text);
    let env: Vec<(&str, &str)> = pipeline.tasks[0]
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("A", "1"),
            ("B", "true"),
            ("C", "1.10"),
            ("D", "3.0"),
            ("E", "0x1F"),
            ("F", "")
        ]
    );
}

#[test]
fn matrix_expands_in_file_order_and_interpolates_everywhere() {
    let text = r#"version: 1
tasks:
  build:
    matrix: { os: [linux, mac], rust: [1.83, nightly] }
    build: { dockerfile: "ci/${{ matrix.os }}.Dockerfile", context: "ci/${{matrix.os}}" }
    runs-on: "${{ matrix.os }}"
    services:
      cache: { image: "redis:${{ matrix.rust }}", env: { R: "${{ matrix.rust }}" }, command: [redis, "--os=${{ matrix.os }}"] }
    env: { TOOLCHAIN: "${{ matrix.rust }}" }
    steps:
      - name: "build on ${{ matrix.os }}"
        run: cargo +${{ matrix.rust }} build
    artifacts: { paths: ["out/${{ matrix.os }}/**"] }
    reports: { junit: ["junit-${{ matrix.os }}.xml"] }
  after:
    needs: [build]
    steps: [echo done]
"#;
    let pipeline = ok(text);
    let names: Vec<&str> = pipeline.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "build[os=linux,rust=1.83]",
            "build[os=linux,rust=nightly]",
            "build[os=mac,rust=1.83]",
            "build[os=mac,rust=nightly]",
            "after"
        ]
    );
    let task = pipeline.task("build[os=mac,rust=nightly]").expect("task");
    let build = task.build.as_ref().expect("build");
    assert_eq!(build.dockerfile, "ci/mac.Dockerfile");
    assert_eq!(build.context, "ci/mac");
    assert_eq!(task.runs_on, ["mac"]);
    assert_eq!(task.services[0].image, "redis:nightly");
    assert_eq!(
        task.services[0].env,
        [("R".to_owned(), "nightly".to_owned())]
    );
    assert_eq!(
        task.services[0].command.as_deref(),
        Some(&["redis".to_owned(), "--os=mac".to_owned()][..])
    );
    assert_eq!(task.env, [("TOOLCHAIN".to_owned(), "nightly".to_owned())]);
    assert_eq!(task.steps[0].name, "build on mac");
    assert_eq!(task.steps[0].run, "cargo +nightly build");
    assert_eq!(task.artifacts.paths, ["out/mac/**"]);
    assert_eq!(task.reports.junit, ["junit-mac.xml"]);
    assert_eq!(pipeline.task("after").expect("after").needs.len(), 4);
    assert_eq!(pipeline.dependants("build[os=linux,rust=1.83]"), ["after"]);
}

#[test]
fn build_defaults_and_single_strings() {
    let text = "version: 1\ntasks:\n  a:\n    build: {}\n    runs-on: linux\n    when: { branch: 'release/*', event: tag }\n    steps: [x]\n";
    let pipeline = ok(text);
    let task = &pipeline.tasks[0];
    let build = task.build.as_ref().expect("build");
    assert_eq!(
        (build.dockerfile.as_str(), build.context.as_str()),
        ("Dockerfile", ".")
    );
    assert_eq!(task.runs_on, ["linux"]);
    let when = task.when.as_ref().expect("when");
    assert_eq!(when.branch, ["release/*"]);
    assert_eq!(when.event, [Event::Tag]);
    assert_eq!(task.retry, 0);
    assert_eq!(task.timeout, None);
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let text = r#"version: 1
tasks:
  .rust: &rust
    image: rust:1.83
    env: { CARGO_TERM_COLOR: always }
    timeout: 10m
  lint:
    <<: *rust
    steps: &steps
      - cargo clippy
  test:
    <<: *rust
    image: rust:nightly
    steps: *steps
"#;
    let pipeline = ok(text);
    let names: Vec<&str> = pipeline.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["lint", "test"], "templates are not tasks");
    let lint = pipeline.task("lint").expect("lint");
    assert_eq!(lint.image.as_deref(), Some("rust:1.83"));
    assert_eq!(
        lint.env,
        [("CARGO_TERM_COLOR".to_owned(), "always".to_owned())]
    );
    assert_eq!(lint.timeout.map(|t| t.to_string()).as_deref(), Some("10m"));
    let test = pipeline.task("test").expect("test");
    assert_eq!(
        test.image.as_deref(),
        Some("rust:nightly"),
        "explicit keys win over merged ones"
    );
    assert_eq!(test.steps, lint.steps);

    // An error inside merged content is still located.
    let bad = "version: 1\ntasks:\n  .t: &t\n    imagee: x\n  a:\n    <<: *t\n    steps: [x]\n";
    let diagnostics = err(bad);
    assert!(
        diagnostics.0[0].message.contains("did you mean `image`?"),
        "{diagnostics}"
    );
    assert_well_located(bad, &diagnostics);
}

/// Runs `parse` and checks it fails within `limit`, with well-located errors.
fn assert_rejected_quickly(text: &str, limit: StdDuration) -> Diagnostics {
    let start = Instant::now();
    let result = parse(FILE, text);
    let elapsed = start.elapsed();
    let diagnostics = result.expect_err("hostile input must be rejected");
    assert!(elapsed < limit, "took {elapsed:?}: {diagnostics}");
    assert_well_located(text, &diagnostics);
    diagnostics
}

#[test]
fn alias_bomb_is_rejected() {
    // "Billion laughs": 9 levels of 10 aliases each would expand to 10^9 items.
    let mut levels = vec![
        "  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]"
            .to_owned(),
    ];
    for level in 1..9u8 {
        let (name, previous) = ((b'a' + level) as char, (b'a' + level - 1) as char);
        levels.push(format!(
            "  {name}: &{name} [{}]",
            vec![format!("*{previous}"); 10].join(",")
        ));
    }
    let anchors = levels.join("\n");
    // At the top level, in a template (deserialized like any task), and as a
    // value that is read.
    let top = format!("version: 1\nbomb:\n{anchors}\ntasks:\n  a:\n    steps: [x]\n");
    let in_template = format!(
        "version: 1\ntasks:\n  .bomb:\n    env:\n{}\n  a:\n    steps: [x]\n",
        anchors
            .replace("\n  ", "\n      ")
            .replacen("  a:", "      a:", 1)
    );
    let used = format!(
        "version: 1\ntasks:\n  .bomb:\n    services:\n      s:\n        image: x\n        command: &c [{}]\n  a:\n    steps: *c\n",
        ["lol"; 10].join(",")
    );
    for text in [top, in_template] {
        assert_rejected_quickly(&text, StdDuration::from_secs(5));
    }
    // Reusing a list of steps through an alias is fine in itself.
    ok(&used);
}

#[test]
fn deep_nesting_is_rejected() {
    let depth = 10_000;
    for text in [
        "[".repeat(depth),
        format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        format!("version: 1\ntasks:\n  a:\n    steps: {}", "[".repeat(depth)),
        format!(
            "version: 1\ntasks:\n  a:\n    env: {}",
            "{a: ".repeat(depth)
        ),
        (0..200)
            .map(|i| format!("{}- x\n", " ".repeat(i * 2)))
            .collect::<String>(),
        (0..200)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect::<String>(),
    ] {
        assert_rejected_quickly(&text, StdDuration::from_secs(5));
    }
    let diagnostics = assert_rejected_quickly(&"[".repeat(depth), StdDuration::from_secs(5));
    assert!(
        diagnostics.0[0].message.contains("nested too deeply"),
        "{diagnostics}"
    );
}

#[test]
fn huge_inputs_are_rejected() {
    // 2 MiB: rejected on size alone.
    let big = format!(
        "version: 1\ntasks:\n  a:\n    steps:\n{}",
        "      - echo hello world\n".repeat(2 << 20 >> 5)
    );
    assert!(big.len() > 2 << 20 >> 1);
    let mut two_mib = big.clone();
    while two_mib.len() < 2 << 20 {
        two_mib.push_str(&big);
    }
    let diagnostics = assert_rejected_quickly(&two_mib, StdDuration::from_secs(5));
    assert!(diagnostics.0[0].message.contains("too large"));

    // 100 000 keys: at the top level (the first unknown key stops it) and in
    // an `env` mapping, where the node budget stops it under 1 MiB.
    let top: String = (0..100_000).map(|i| format!("k{i:x}: 1\n")).collect();
    assert_rejected_quickly(&top, StdDuration::from_secs(5));
    let entries: Vec<String> = (0..100_000).map(|i| format!("K{i:x}: 1")).collect();
    let env = format!(
        "version: 1\ntasks:\n  a:\n    steps: [x]\n    env: {{{}}}\n",
        entries.join(",")
    );
    assert!(env.len() <= MAX_PIPELINE_BYTES);
    let diagnostics = assert_rejected_quickly(&env, StdDuration::from_secs(10));
    assert!(
        diagnostics.0[0].message.contains("too many values"),
        "{diagnostics}"
    );
}

#[test]
fn many_errors_stay_fast_and_bounded() {
    // Every task needs an unknown task: each error could compare with every
    // task name and list them all.
    let mut text = String::from("version: 1\ntasks:\n");
    for i in 0..10_000 {
        text.push_str(&format!(
            "  t{i}:\n    needs: [zz-missing-{i}]\n    steps: [x]\n"
        ));
    }
    let diagnostics = assert_rejected_quickly(&text, StdDuration::from_secs(10));
    assert!(diagnostics.0.len() <= 201, "{}", diagnostics.0.len());
    let last = diagnostics.0.last().expect("diagnostics");
    assert!(
        last.message
            .starts_with("too many errors: 9800 more not shown"),
        "{last}"
    );
    assert!(
        diagnostics.0[0].message.contains("and 9979 more"),
        "{}",
        diagnostics.0[0]
    );

    // Thousands of matrix references in a task without a matrix, each
    // located inside its string.
    let steps: Vec<String> = (0..20_000)
        .map(|_| "'${{ matrix.x }}'".to_owned())
        .collect();
    let text = format!(
        "version: 1\ntasks:\n  a:\n    steps: [{}]\n",
        steps.join(",")
    );
    assert_rejected_quickly(&text, StdDuration::from_secs(10));

    // ... or in a single string.
    let text = one_task(&format!(
        "    steps: ['{}']\n",
        "${{ matrix.x }}".repeat(20_000)
    ));
    let diagnostics = assert_rejected_quickly(&text, StdDuration::from_secs(10));
    assert_eq!((diagnostics.0[1].line, diagnostics.0[1].column), (4, 29));

    // Many secrets and variables in one task.
    let names: Vec<String> = (0..30_000).map(|i| format!("S{i}")).collect();
    let env: Vec<String> = names.iter().map(|n| format!("{n}: 1")).collect();
    let text = format!(
        "version: 1\nenv: {{{}}}\ntasks:\n  a:\n    env: {{{}}}\n    secrets: [{}]\n    steps: [x]\n",
        env[..15_000].join(","),
        env[15_000..].join(","),
        names.join(",")
    );
    let diagnostics = assert_rejected_quickly(&text, StdDuration::from_secs(10));
    assert!(
        diagnostics.0[0]
            .message
            .contains("is both in `env` and in `secrets`"),
        "{diagnostics}"
    );
}

#[test]
fn matrices_cannot_blow_up_the_expanded_pipeline() {
    // 256 copies of a ~200 KiB script, times four tasks: far more than the
    // file's size once expanded.
    let script = "echo 0123456789abcdef\n".repeat(10_000);
    let indented: String = script
        .lines()
        .map(|line| format!("          {line}\n"))
        .collect();
    let values: Vec<String> = (0..256).map(|i| i.to_string()).collect();
    let mut text = String::from("version: 1\ntasks:\n");
    for task in 0..4 {
        text.push_str(&format!(
            "  t{task}:\n    matrix: {{ n: [{}] }}\n    steps:\n      - |\n{indented}",
            values.join(",")
        ));
        if text.len() > MAX_PIPELINE_BYTES - 300_000 {
            break;
        }
    }
    assert!(text.len() <= MAX_PIPELINE_BYTES);
    let diagnostics = assert_rejected_quickly(&text, StdDuration::from_secs(10));
    assert!(
        diagnostics.0[0]
            .message
            .contains("too large once its matrices are expanded"),
        "{diagnostics}"
    );

    // Too many axes, even of one value each.
    let axes: Vec<String> = (0..40).map(|i| format!("a{i}: [x]")).collect();
    let text = one_task(&format!(
        "    matrix: {{ {} }}\n    steps: [x]\n",
        axes.join(", ")
    ));
    let diagnostics = err(&text);
    assert!(
        diagnostics.0[0].message.contains("has 40 axes: at most 32"),
        "{diagnostics}"
    );
}

#[test]
fn many_tasks_in_a_long_chain_are_fine() {
    let mut text = String::from("version: 1\ntasks:\n  t0:\n    steps: [x]\n");
    for i in 1..2_000 {
        text.push_str(&format!(
            "  t{i}:\n    needs: [t{}]\n    steps: [x]\n",
            i - 1
        ));
    }
    let pipeline = ok(&text);
    assert_eq!(pipeline.tasks.len(), 2_000);
    let selected = pipeline.select(&["t1999".into()]).expect("select");
    assert_eq!(selected.tasks.len(), 2_000);
    // Close the chain into a cycle: it is found and reported at `t0`'s need.
    let cyclic = text.replacen(
        "  t0:\n    steps: [x]\n",
        "  t0:\n    needs: [t1999]\n    steps: [x]\n",
        1,
    );
    let diagnostics = err(&cyclic);
    assert!(
        diagnostics.0[0]
            .message
            .starts_with("cycle in `needs`: t0 → t1999 → t1998"),
        "{}",
        diagnostics.0[0]
    );
    assert_eq!((diagnostics.0[0].line, diagnostics.0[0].column), (4, 13));
}

/// A valid pipeline that exercises most keys, for mutation testing.
const VALID: &str = r#"version: 1
timeout: 1h
env: { A: "1", B: x }
tasks:
  .tpl: &tpl
    image: alpine:3
    env: { T: 1 }
  lint:
    <<: *tpl
    steps:
      - run: echo lint
  test:
    image: rust:1.83
    runs-on: [linux]
    matrix: { db: [postgres, sqlite], os: [a, b] }
    services:
      postgres: { image: "postgres:16", env: { P: pw }, command: [postgres, -c, "x=${{ matrix.db }}"] }
    env: { DB: "${{ matrix.db }}" }
    secrets: [TOKEN]
    steps:
      - name: test ${{ matrix.os }}
        run: |
          cargo test
          echo done
      - echo short
    timeout: 20m
    retry: 2
    resources: { cpus: 0.5, memory: 1.5g }
    artifacts: { paths: ["target/${{ matrix.os }}/app"], expire-in: 30d }
    reports: { junit: [report.xml] }
  deploy:
    needs: [lint, test]
    when: { branch: [main, "release/**"], event: [push, tag] }
    allow-failure: true
    steps: [./deploy.sh]
"#;

#[test]
fn the_mutation_seed_is_valid() {
    let pipeline = ok(VALID);
    assert_eq!(pipeline.tasks.len(), 6);
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteChar(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Insert(usize, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteChar),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                ":",
                "-",
                "{",
                "*a",
                "[",
                "&a ",
                "\n",
                " ",
                "\t",
                "'",
                "${{",
                "<<: *tpl\n",
                "é",
                "zz: 1\n",
                "imgae: [x]\n    ",
                "{ nmae: 1 }",
            ])
        )
            .prop_map(|(at, text)| Mutation::Insert(at, text)),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<&str> = text.lines().collect();
    match *mutation {
        Mutation::DeleteChar(at) => {
            let at = at % chars.len().max(1);
            chars
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != at)
                .map(|(_, c)| c)
                .collect()
        }
        Mutation::DuplicateLine(at) => {
            let at = at % lines.len().max(1);
            let line = lines[at];
            lines.insert(at, line);
            lines.join("\n") + "\n"
        }
        Mutation::SwapLines(a, b) => {
            let (a, b) = (a % lines.len().max(1), b % lines.len().max(1));
            lines.swap(a, b);
            lines.join("\n") + "\n"
        }
        Mutation::Insert(at, insert) => {
            let at = at % (chars.len() + 1);
            let mut out: String = chars[..at].iter().collect();
            out.push_str(insert);
            out.extend(&chars[at..]);
            out
        }
    }
}

/// An unknown key to add to [`VALID`].
#[derive(Debug, Clone)]
struct UnknownKey {
    /// Which mapping: a block mapping's line to insert before, or a flow
    /// mapping's line.
    line: prop::sample::Index,
    flow: bool,
    name: prop::sample::Index,
    value: prop::sample::Index,
    /// In a block mapping, whether the value is a block mapping.
    nested: bool,
}

fn unknown_key() -> impl Strategy<Value = UnknownKey> {
    (
        any::<prop::sample::Index>(),
        any::<bool>(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(line, flow, name, value, nested)| UnknownKey {
            line,
            flow,
            name,
            value,
            nested,
        })
}

/// [`VALID`] with unknown keys added to its mappings of known keys (not to
/// `env`, `matrix`, `tasks` or `services`, whose keys are names), in block
/// and flow style; and the names of those keys.
fn with_unknown_keys(keys: &[UnknownKey]) -> (String, Vec<String>) {
    const NAMES: [&str; 6] = ["imgae", "stpes", "zz", "script", "foo-bar", "nmae"];
    const VALUES: [&str; 6] = [
        "1",
        "[a, b]",
        "{ x: 1 }",
        "'é€'",
        "é",
        "\"${{ matrix.db }}\"",
    ];
    const FLOW: [&str; 5] = [
        "postgres: {",
        "resources: {",
        "artifacts: {",
        "reports: {",
        "when: {",
    ];
    let lines: Vec<&str> = VALID.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let block: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            let line = lines[i];
            matches!(indent(line), 0 | 4 | 8)
                && line.contains(':')
                && !line.trim_start().starts_with('-')
        })
        .collect();
    let flow: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            FLOW.iter()
                .any(|key| lines[i].trim_start().starts_with(key))
        })
        .collect();
    let mut before = vec![Vec::new(); lines.len()];
    let mut inside = vec![Vec::new(); lines.len()];
    let mut names = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let name = format!("{}{i}", key.name.get(&NAMES));
        let value = key.value.get(&VALUES);
        if key.flow {
            inside[*key.line.get(&flow)].push(format!("{name}: {value}, "));
        } else {
            let at = *key.line.get(&block);
            let indent = " ".repeat(indent(lines[at]));
            before[at].push(if key.nested {
                format!("{indent}{name}:\n{indent}  x: {value}\n{indent}  y: [1]\n")
            } else {
                format!("{indent}{name}: {value}\n")
            });
        }
        names.push(name);
    }
    let mut text = String::new();
    for (i, line) in lines.iter().enumerate() {
        text.extend(before[i].iter().map(String::as_str));
        match line.find("{ ") {
            Some(at) if !inside[i].is_empty() => {
                text.push_str(&line[..at + 2]);
                text.extend(inside[i].iter().map(String::as_str));
                text.push_str(&line[at + 2..]);
            }
            _ => text.push_str(line),
        }
        text.push('\n');
    }
    (text, names)
}

proptest! {
    #[test]
    fn every_unknown_key_is_reported_at_its_place(keys in prop::collection::vec(unknown_key(), 1..8)) {
        let (text, names) = with_unknown_keys(&keys);
        let diagnostics = err(&text);
        assert_well_located(&text, &diagnostics);
        let mut expected: Vec<(u64, u64, &str)> = names
            .iter()
            .map(|name| {
                let (line, column) = position(&text, &format!("{name}:"));
                (line, column, name.as_str())
            })
            .collect();
        expected.sort();
        // The keys, each where it is written, and nothing else: the rest
        // of the file is valid.
        let found: Vec<String> = lines(&diagnostics);
        prop_assert_eq!(found.len(), expected.len(), "{}\n--- in:\n{}", diagnostics, text);
        for (found, (line, column, name)) in found.iter().zip(&expected) {
            let prefix = format!("{line}:{column}: unknown key `{name}`: ");
            prop_assert!(found.starts_with(&prefix), "{} is not {}\n--- in:\n{}", found, prefix, text);
        }
    }

    #[test]
    fn mutated_pipelines_with_unknown_keys_never_panic(
        keys in prop::collection::vec(unknown_key(), 1..8),
        mutations in prop::collection::vec(mutation(), 0..4),
    ) {
        let (text, _) = with_unknown_keys(&keys);
        let text = mutations.iter().fold(text, |text, m| apply(&text, m));
        if let Err(diagnostics) = parse(FILE, &text) {
            assert_well_located(&text, &diagnostics);
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        if let Err(diagnostics) = parse(FILE, &text) {
            assert_well_located(&text, &diagnostics);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(diagnostics) = parse(FILE, &text) {
            assert_well_located(&text, &diagnostics);
        }
    }

    #[test]
    fn yaml_like_strings_never_panic(text in "([a-z0-9 :,\\-\\[\\]{}&*!|>'\"#$.<\n]|version: 1\n|tasks:\n|  a:\n|    steps: |\\$\\{\\{ matrix\\.x \\}\\}){0,60}") {
        if let Err(diagnostics) = parse(FILE, &text) {
            assert_well_located(&text, &diagnostics);
        }
    }

    #[test]
    fn mutated_pipelines_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        let text = mutations.iter().fold(VALID.to_owned(), |text, m| apply(&text, m));
        if let Err(diagnostics) = parse(FILE, &text) {
            assert_well_located(&text, &diagnostics);
        }
    }
}
