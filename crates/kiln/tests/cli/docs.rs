//! The commands the README and the docs show, run as written in a scratch
//! directory, each checked for what the text around it promises. When a
//! command in the docs changes, these tests run the new one; a command they
//! do not know fails them until it is given an expectation here.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::server::{ADMIN, Server};
use crate::support::GitRepo;

/// A fenced block of a Markdown file, with the heading it is under.
struct Block {
    heading: String,
    language: String,
    lines: Vec<String>,
}

fn blocks(path: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(workspace().join(path)).unwrap();
    let mut blocks = Vec::new();
    let mut heading = String::new();
    let mut open: Option<Block> = None;
    for line in text.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(language)) => {
                open = Some(Block {
                    heading: heading.clone(),
                    language: language.trim().to_string(),
                    lines: Vec::new(),
                })
            }
            (Some(_), Some(_)) => blocks.push(open.take().unwrap()),
            (Some(block), None) => block.lines.push(line.to_string()),
            (None, None) => {
                if line.starts_with('#') {
                    heading = line.trim_start_matches('#').trim().to_string();
                }
            }
        }
    }
    blocks
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A command line as a reader would type it: the trailing comment dropped.
fn command_of(line: &str) -> Option<String> {
    let command = match line.find(" #") {
        Some(at) => &line[..at],
        None => line,
    };
    let command = command.trim();
    (!command.is_empty() && !command.starts_with('#')).then(|| command.to_string())
}

/// Runs doc commands with `kiln` first on PATH, in a scratch directory,
/// with the values the docs leave to the reader (`<the admin token>`, …).
struct Shell {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    values: HashMap<String, String>,
    background: Vec<Child>,
    /// A network namespace of its own, where the docs' fixed ports (8080,
    /// 9090) are free whatever else runs on this machine.
    netns: Option<String>,
}

impl Shell {
    fn new() -> Shell {
        let bin = Path::new(env!("CARGO_BIN_EXE_kiln")).parent().unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        Shell {
            dir: tempfile::tempdir().unwrap(),
            env: vec![("PATH".into(), path)],
            values: HashMap::new(),
            background: Vec::new(),
            netns: None,
        }
    }

    /// A shell whose commands run in a new network namespace with only a
    /// loopback interface (`ip netns`; the tests run as root).
    fn isolated() -> Shell {
        let name = format!("kiln-docs-{}", std::process::id());
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let output = Command::new("ip").args(&args).output().unwrap();
            assert!(
                output.status.success(),
                "ip {args:?}: {}",
                describe(&output)
            );
        }
        let mut shell = Shell::new();
        shell.netns = Some(name);
        shell
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The line with every `<placeholder>` and example path replaced.
    fn fill(&self, line: &str) -> String {
        let mut line = line.to_string();
        for (placeholder, value) in &self.values {
            line = line.replace(placeholder, value);
        }
        assert!(
            !line.contains('<'),
            "the docs leave a value to the reader that this test does not know: {line}"
        );
        line
    }

    fn command(&self, line: &str) -> Command {
        let mut command = match &self.netns {
            Some(name) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name, "sh"]);
                command
            }
            None => Command::new("sh"),
        };
        command
            .args(["-c", &self.fill(line)])
            .current_dir(self.path())
            .env_remove("KILN_ADMIN_TOKEN")
            .env_remove("KILN_AGENT_TOKEN")
            .env_remove("KILN_SERVER")
            .env_remove("KILN_TOKEN")
            .env_remove("KILN_DATA_DIR")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs a line to its end; it must succeed.
    fn run(&self, line: &str) -> String {
        let output = self.command(line).stdin(Stdio::null()).output().unwrap();
        let text = describe(&output);
        assert!(output.status.success(), "`{line}` failed:\n{text}");
        text
    }

    /// Applies `export K=V …` to the commands that follow.
    fn export(&mut self, line: &str) {
        let assignments = self.fill(line.strip_prefix("export ").unwrap());
        for assignment in assignments.split_whitespace() {
            let (key, value) = assignment.split_once('=').unwrap();
            self.env.push((key.to_string(), value.to_string()));
        }
    }

    /// Starts a command that stays in the foreground (a server, an agent)
    /// and waits until it prints `ready`; returns what it printed so far.
    fn start(&mut self, line: &str, ready: &str) -> String {
        // `exec`: the signal that ends it at the end reaches the command,
        // not a shell that would leave it behind. Variables set for the
        // command (`K=V kiln …`) go before it, where `exec` keeps them.
        let filled = self.fill(line);
        let words: Vec<&str> = filled.split(' ').collect();
        let assignments = words
            .iter()
            .take_while(|word| {
                word.split_once('=')
                    .is_some_and(|(key, _)| is_variable(key))
            })
            .count();
        let (set, command) = words.split_at(assignments);
        let mut child = self
            .command(&format!("{} exec {}", set.join(" "), command.join(" ")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = read_lines(&mut child);
        self.background.push(child);
        let mut seen = String::new();
        let started = Instant::now();
        while !seen.contains(ready) {
            match lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => seen.push_str(&(line + "\n")),
                Err(_) => panic!("`{line}` did not print `{ready}`:\n{seen}"),
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{seen}");
        }
        // What follows the ready line in the same burst (the start-up text).
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(300)) {
            seen.push_str(&(line + "\n"));
        }
        seen
    }
}

/// Whether `key` names a shell variable, as in `KEY=value command`.
fn is_variable(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Drop for Shell {
    fn drop(&mut self) {
        for child in &mut self.background {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.background {
            let started = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Some(name) = &self.netns {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

fn read_lines(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                tx.send(line).ok();
            }
        });
    }
    rx
}

fn describe(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The value printed after `label` on one of `text`'s lines.
fn printed_after(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|line| line.split(label).nth(1))
        .unwrap_or_else(|| panic!("nothing printed after `{label}`:\n{text}"))
        .trim()
        .to_string()
}

const HELLO_PIPELINE: &str = "version: 1\ntasks:\n  hello:\n    image: kiln-test/busybox:latest\n    steps:\n      - run: echo hello from the readme\n";

fn readme_blocks(heading: &str) -> Vec<Block> {
    let blocks: Vec<Block> = blocks("README.md")
        .into_iter()
        .filter(|b| b.heading == heading)
        .collect();
    assert!(
        !blocks.is_empty(),
        "README.md has no block under `{heading}`"
    );
    blocks
}

/// Every command block of the README is run by one of the tests below.
#[test]
fn every_readme_block_has_a_test() {
    let known = ["Kiln", "Run it", "As a server", "Test it"];
    for block in blocks("README.md") {
        assert!(
            known.contains(&block.heading.as_str()),
            "README.md has a block under `{}` that no test runs: give it one in tests/cli/docs.rs",
            block.heading
        );
    }
    // `Test it` is the command that runs these tests.
    let test = readme_blocks("Test it");
    assert_eq!(test[0].lines, ["scripts/test.sh"]);
}

/// The pipeline the README opens with is a valid pipeline file.
#[test]
fn the_readme_pipeline_is_valid() {
    let block = &readme_blocks("Kiln")[0];
    assert_eq!(block.language, "yaml");
    let repo = GitRepo::new(&[(".kiln.yml", &(block.lines.join("\n") + "\n"))]);
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("validate")
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    // test × 2 databases, deploy.
    assert!(
        describe(&output).contains("valid, 3 tasks"),
        "{}",
        describe(&output)
    );
}

/// `scripts/demo.sh`: the main job, to green, with the secret masked and
/// the `deploy` task skipped by its `when`; the run's page, at the address
/// it prints, opens with the password it prints while it waits for Enter.
#[test]
fn the_readme_demo_runs_to_green() {
    let block = &readme_blocks("Run it")[0];
    let lines: Vec<String> = block.lines.iter().filter_map(|l| command_of(l)).collect();
    assert_eq!(lines, ["scripts/demo.sh"]);
    let mut demo = Command::new("bash")
        .arg(workspace().join(&lines[0]))
        .current_dir(workspace())
        // The binary under test, not a release build of its own.
        .env("KILN_BIN", env!("CARGO_BIN_EXE_kiln"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = read_lines(&mut demo);
    let mut text = String::new();
    while !text.contains("press Enter") {
        match printed.recv_timeout(Duration::from_secs(600)) {
            Ok(line) => text.push_str(&(line + "\n")),
            Err(_) => panic!("the demo never offered its page:\n{text}"),
        }
    }
    let page = printed_after(&text, "the run in the browser: ");
    let password = printed_after(&text, "sign in as admin, password ");
    let jar = tempfile::NamedTempFile::new().unwrap();
    let jar = jar.path().to_str().unwrap();
    let origin = page.split("/jobs/").next().unwrap();
    let signed_in = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-c", jar])
        .args([
            "-H",
            &format!("Origin: {origin}"),
            "-H",
            "Accept: text/html",
        ])
        .args(["--data-urlencode", "username=admin"])
        .args(["--data-urlencode", &format!("password={password}")])
        .arg(format!("{origin}/login"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&signed_in.stdout), "303");
    let html = Command::new("curl")
        .args(["-sS", "--fail", "-b", jar, &page])
        .output()
        .unwrap();
    let html = String::from_utf8_lossy(&html.stdout);
    assert!(html.contains("<title>Run #1 of demo"), "{html}");
    assert!(
        html.contains("s-success"),
        "the page shows the run green:\n{html}"
    );

    use std::io::Write;
    demo.stdin.take().unwrap().write_all(b"\n").unwrap();
    let status = demo.wait().unwrap();
    while let Ok(line) = printed.recv_timeout(Duration::from_millis(500)) {
        text.push_str(&(line + "\n"));
    }
    assert!(status.success(), "{text}");
    assert!(text.contains("run #1: success"), "{text}");
    assert!(text.contains("deploy"), "{text}");
    assert!(text.contains("skipped"), "{text}");
    assert!(text.contains("to look around again"), "{text}");
    assert!(
        !text.contains("s3cr3t-demo-value"),
        "the secret leaked:\n{text}"
    );
}

/// The server quick-start, as written: `kiln up` with a relative data
/// directory, the client commands, then a second agent attached with the
/// CLI alone.
#[test]
fn the_readme_server_quick_start_works_as_written() {
    let mut shell = Shell::isolated();
    let repo = GitRepo::new(&[(".kiln.yml", HELLO_PIPELINE)]);
    shell
        .values
        .insert("/path/to/repo".into(), repo.path().display().to_string());
    let blocks = readme_blocks("As a server");
    assert_eq!(blocks.len(), 2, "the server block and the agent block");
    for line in blocks
        .iter()
        .flat_map(|b| &b.lines)
        .filter_map(|l| command_of(l))
    {
        if line.starts_with("kiln up") {
            let printed = shell.start(&line, "agent embedded connected");
            assert!(
                printed.contains("listening on http://127.0.0.1:8080"),
                "{printed}"
            );
            assert!(
                printed.contains("agents connect to http://127.0.0.1:9090"),
                "{printed}"
            );
            let data = shell.path().canonicalize().unwrap().join(".kiln-data");
            assert!(
                printed.contains(&format!(
                    "database: SQLite at {}",
                    data.join("kiln.db").display()
                )),
                "{printed}"
            );
            // The first start says how to attach another agent.
            assert!(
                printed.contains("kiln agent-token create NAME"),
                "{printed}"
            );
            assert!(
                printed.contains(
                    "KILN_AGENT_TOKEN=<the token printed> kiln agent --server http://127.0.0.1:9090"
                ),
                "{printed}"
            );
            let token = printed_after(&printed, "admin token (shown once, keep it): ");
            shell.values.insert("<the admin token>".into(), token);
        } else if line.starts_with("export ") {
            shell.export(&line);
        } else if line.starts_with("kiln job create") {
            let out = shell.run(&line);
            assert!(out.contains("created git job `app`"), "{out}");
        } else if line.starts_with("kiln trigger") {
            let out = shell.run(&line);
            assert!(out.contains("run #1: success"), "{out}");
        } else if line.starts_with("kiln logs") {
            let out = shell.run(&line);
            assert!(out.contains("hello from the readme"), "{out}");
        } else if line.starts_with("kiln agent-token create") {
            let out = shell.run(&line);
            let token = printed_after(&out, "(shown once, keep it): ");
            assert!(token.starts_with("kiln_agent_"), "{out}");
            shell.values.insert("<the agent token>".into(), token);
        } else if line.starts_with("KILN_AGENT_TOKEN=") && line.contains(" kiln agent ") {
            let printed = shell.start(&line, "connected");
            assert!(printed.contains("agent build-2 connected to"), "{printed}");
        } else if line == "kiln agents" {
            let out = shell.run(&line);
            assert!(out.contains("build-2") && out.contains("embedded"), "{out}");
        } else {
            panic!("README.md: no expectation for `{line}`: add one in tests/cli/docs.rs");
        }
    }
    // The relative data directory was used as given, once.
    assert!(shell.path().join(".kiln-data/kiln.db").is_file());
    assert!(!shell.path().join(".kiln-data/git/.kiln-data").exists());
    assert!(shell.path().join(".kiln-agent").is_dir());
}

/// Every command in docs/client.md's table, and its jobs file, run against
/// a real server; the table and this list must name the same commands.
#[test]
fn the_client_docs_commands_do_what_they_say() {
    let server = Server::start(None);
    let mut shell = Shell::new();
    shell.env.push(("KILN_SERVER".into(), server.url.clone()));
    shell.env.push(("KILN_TOKEN".into(), ADMIN.into()));
    let repo = GitRepo::new(&[(
        ".kiln.yml",
        "version: 1\ntasks:\n  hello:\n    steps: [echo hello from the client docs]\n",
    )]);
    std::fs::write(shell.path().join("token.txt"), "ghp_not_a_real_token\n").unwrap();
    std::fs::write(
        shell.path().join("slow.yml"),
        "version: 1\ntasks:\n  slow:\n    steps: [sleep 60]\n",
    )
    .unwrap();
    let repo_url = repo.url();
    // (the command as the table writes it, what is run, what it prints)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "kiln forge set NAME --kind K --api-url U [--token-file F] [--webhook-secret-file F]",
            "printf hook-s3cret | kiln forge set hub --kind github --api-url https://api.github.com \
             --token-file token.txt --webhook-secret-file -"
                .into(),
            "created forge `hub` (github)",
        ),
        ("kiln forge list", "kiln forge list".into(), "hub"),
        (
            "kiln job create NAME --repository URL [--pipeline-path P] [--default-branch B] [--forge F] [--fork-prs approve|run|ignore]",
            format!(
                "kiln job create app --repository {repo_url} --pipeline-path .kiln.yml --default-branch main \
                 --forge hub --fork-prs ignore"
            ),
            "created git job `app`",
        ),
        (
            "kiln job create NAME --repository URL --poll-interval INTERVAL",
            format!("kiln job create polled --repository {repo_url} --poll-interval 60s"),
            "created git job `polled`",
        ),
        (
            "kiln job create NAME --pipeline-file FILE [--public]",
            "kiln job create slow --pipeline-file slow.yml --public".into(),
            "created freestyle job `slow`",
        ),
        ("kiln job list", "kiln job list".into(), "slow"),
        (
            "kiln job show NAME",
            "kiln job show app".into(),
            "default branch: main",
        ),
        (
            "kiln trigger JOB [--branch B | --sha S] [-f]",
            "kiln trigger app --branch main -f".into(),
            "run #1: success",
        ),
        (
            "kiln runs JOB [--status S] [--branch B] [-n N]",
            "kiln runs app --status success --branch main -n 5".into(),
            "success",
        ),
        (
            "kiln logs JOB RUN [TASK] [--attempt N] [-f]",
            "kiln logs app 1 hello --attempt 1 -f".into(),
            "hello from the client docs",
        ),
        (
            "kiln secret set JOB NAME [--allow-forks]",
            "printf v4lue | kiln secret set app DEPLOY_KEY --allow-forks".into(),
            "DEPLOY_KEY",
        ),
        (
            "kiln secret list JOB",
            "kiln secret list app".into(),
            "DEPLOY_KEY",
        ),
        (
            "kiln secret delete JOB NAME",
            "kiln secret delete app DEPLOY_KEY".into(),
            "DEPLOY_KEY",
        ),
        ("kiln agents", "kiln agents".into(), "server"),
        (
            "kiln agent-token create NAME [--labels a,b] [--capacity N]",
            "kiln agent-token create build-2 --labels linux,amd64 --capacity 2".into(),
            "KILN_AGENT_TOKEN=kiln_agent_",
        ),
        (
            "kiln user create NAME [--role admin|user] [--password-stdin]",
            "printf 'a long password' | kiln user create ada --role user --password-stdin".into(),
            "created user `ada`: user, enabled, with a password",
        ),
        ("kiln user list", "kiln user list".into(), "ada"),
        (
            "kiln user set NAME [--role R] [--disable | --enable] [--password-stdin]",
            "kiln user set ada --disable".into(),
            "updated user `ada`: user, disabled",
        ),
        (
            "kiln token create NAME [--expires-in 30d] [--user U]",
            "kiln token create laptop --expires-in 30d".into(),
            "kiln_",
        ),
        (
            "kiln token list [--user U]",
            "kiln token list".into(),
            "laptop",
        ),
        (
            "kiln token revoke ID",
            // The id is the `laptop` token's, found below.
            "kiln token revoke ID".into(),
            "revoked token",
        ),
        (
            "kiln member set JOB USER ROLE",
            "kiln member set app ada developer".into(),
            "`ada` is now developer of job `app`",
        ),
        (
            "kiln member list JOB",
            "kiln member list app".into(),
            "developer",
        ),
        (
            "kiln member remove JOB USER",
            "kiln member remove app ada".into(),
            "removed `ada` from job `app`",
        ),
        (
            "kiln user delete NAME",
            "kiln user delete ada".into(),
            "deleted user `ada`",
        ),
        (
            "kiln audit [--actor A] [--action X] [--object O] [--limit N | --all]",
            "kiln audit --actor admin --action user.create --object user/ada --limit 5".into(),
            "user.create",
        ),
        (
            "kiln apply -f jobs.yml",
            "kiln apply -f jobs.yml".into(),
            "created",
        ),
        // Run 1 of `forked` is a fork's pull request, blocked (made below).
        (
            "kiln approve JOB RUN",
            "kiln approve forked 1".into(),
            "approved run #1 of forked",
        ),
        // Cancelled while its task runs: what is printed is the outcome.
        (
            "kiln cancel JOB RUN",
            "kiln cancel slow 1".into(),
            "run #1 of slow: cancelled",
        ),
        (
            "kiln job delete NAME",
            "kiln job delete slow".into(),
            "deleted job `slow`",
        ),
        (
            "kiln forge delete NAME",
            "kiln forge set lab --kind gitlab --api-url https://gitlab.example.com/api/v4 && \
             kiln forge delete lab"
                .into(),
            "deleted forge `lab`",
        ),
    ];
    let mut documented = client_table_commands();
    let mut tested: Vec<String> = cases.iter().map(|(doc, _, _)| doc.to_string()).collect();
    documented.sort();
    tested.sort();
    assert_eq!(
        documented, tested,
        "docs/client.md's table and this test differ"
    );

    let jobs = blocks("docs/client.md")
        .into_iter()
        .find(|b| b.language == "yaml")
        .expect("docs/client.md shows a jobs file");
    std::fs::write(shell.path().join("jobs.yml"), jobs.lines.join("\n") + "\n").unwrap();
    std::fs::create_dir_all(shell.path().join("ci")).unwrap();
    std::fs::write(
        shell.path().join("ci/nightly.kiln.yml"),
        "version: 1\ntasks:\n  report:\n    steps: [echo nightly]\n",
    )
    .unwrap();

    for (doc, line, expected) in &cases {
        if doc.starts_with("kiln approve") {
            blocked_fork_run(&shell, &server, &repo);
        }
        if doc.starts_with("kiln cancel") {
            shell.run("kiln trigger slow");
            wait_until_running(&shell, "slow");
        }
        let line = if doc.starts_with("kiln token revoke") {
            let tokens: serde_json::Value =
                serde_json::from_str(&shell.run("kiln token list --output json")).unwrap();
            let id = tokens
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == "laptop");
            line.replace("ID", &id.expect("the laptop token")["id"].to_string())
        } else {
            line.clone()
        };
        let out = shell.run(&line);
        assert!(out.contains(expected), "`{line}` ({doc}):\n{out}");
    }
    // Applying the same file again changes nothing.
    let again = shell.run("kiln apply -f jobs.yml");
    assert_eq!(again.matches("unchanged").count(), 2, "{again}");
}

/// Makes run 1 of job `forked`: a signed GitHub delivery of a pull request
/// from a fork, whose head `refs/pull/1/head` of `repo` holds, to forge
/// `hub` (its webhook secret set above); waits until the run is `blocked`.
fn blocked_fork_run(shell: &Shell, server: &Server, repo: &GitRepo) {
    let url = repo.url();
    shell.run(&format!(
        "kiln job create forked --repository {url} --forge hub --fork-prs approve"
    ));
    let head = repo.head();
    repo.git(&["update-ref", "refs/pull/1/head", &head]);
    let body = serde_json::to_vec(&serde_json::json!({
        "action": "opened", "number": 1,
        "pull_request": {
            "number": 1, "title": "From a fork", "user": {"login": "stranger"},
            "head": {"ref": "topic", "sha": head, "repo": {"id": 2}},
            "base": {"ref": "main", "sha": head, "repo": {"id": 1}},
        },
        "repository": {"id": 1, "full_name": "team/app", "clone_url": url},
        "sender": {"login": "stranger"},
    }))
    .unwrap();
    let signature = kiln_forge::signature::hmac_sha256_hex(b"hook-s3cret", &body);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        server
            .request(reqwest::Method::POST, "/hooks/hub", None)
            .header("content-type", "application/json")
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", "docs-fork-1")
            .header("x-hub-signature-256", format!("sha256={signature}"))
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    let started = Instant::now();
    loop {
        let out = shell.run("kiln runs forked -o json");
        let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
        if runs["runs"][0]["status"] == "blocked" {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{runs}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_until_running(shell: &Shell, job: &str) {
    let started = Instant::now();
    loop {
        let out = shell.run(&format!("kiln runs {job} -o json"));
        let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
        if runs["runs"][0]["status"] == "running" {
            // The step has started on the agent, not only been claimed.
            std::thread::sleep(Duration::from_millis(500));
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{runs}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The commands in the first column of docs/client.md's table.
fn client_table_commands() -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join("docs/client.md")).unwrap();
    text.lines()
        .filter(|line| line.starts_with("| `kiln"))
        .flat_map(|line| {
            let first = line.split(" | ").next().unwrap().to_string();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                // The table escapes `|` inside code as `\|`.
                .map(|cmd| cmd.trim().replace("\\|", "|"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// docs/running-locally.md: its synopsis names real flags, and a run leaves
/// the files where its layout block says.
#[test]
fn the_running_locally_docs_match_the_command() {
    let doc = blocks("docs/running-locally.md");
    let synopsis = doc[0].lines.join(" ");
    for (command, help) in [("run", "kiln run"), ("validate", "kiln validate")] {
        let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let text = describe(&output);
        let part = synopsis
            .split("kiln ")
            .find(|part| part.starts_with(command))
            .unwrap_or_else(|| panic!("the synopsis has no `{help}`"));
        for flag in part.split(|c: char| !(c.is_alphanumeric() || c == '-')) {
            if flag.starts_with("--") {
                assert!(text.contains(flag), "`{help}` has no {flag}:\n{text}");
            }
        }
    }

    let repo = GitRepo::new(&[(
        ".kiln.yml",
        "version: 1\ntasks:\n  build:\n    steps:\n      - run: mkdir -p out && echo built > out/app.txt && echo '<testsuite name=\"s\" tests=\"1\"><testcase name=\"t\"/></testsuite>' > report.xml\n    artifacts: { paths: [out/app.txt] }\n    reports: { junit: [report.xml] }\n",
    )]);
    for _ in 0..3 {
        let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["run", "--executor", "process"])
            .current_dir(repo.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", describe(&output));
    }
    let layout = doc
        .iter()
        .find(|b| {
            b.lines
                .first()
                .is_some_and(|l| l.starts_with(".kiln/runs/"))
        })
        .expect("docs/running-locally.md shows the run directory's layout");
    let run_dir = layout.lines[0].trim().to_string();
    assert_eq!(run_dir, ".kiln/runs/3/", "the third run's directory");
    for line in &layout.lines[1..] {
        let entry = line.split_whitespace().next().unwrap();
        let entry = entry.replace("<task>", "build").replace(
            "<path>",
            if entry.contains("artifacts") {
                "out/app.txt"
            } else {
                "report.xml"
            },
        );
        let path = repo.path().join(&run_dir).join(&entry);
        assert!(path.exists(), "{} is missing", path.display());
    }
}
