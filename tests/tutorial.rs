//! docs/tutorial.md runs as written: a tutorial whose commands fail, or whose output changed,
//! fails this test.
//!
//! The convention (stated in the tutorial too): in its ```sh blocks,
//! - a line starting with `$ ` is a command; the lines under it, up to the next command, are
//!   output it must print (stdout and stderr together, in any order), each matching one output
//!   line where `...` stands for any text (surrounding spaces ignored);
//! - `$ ringcache up …` is started in the background, as in a terminal of its own: its
//!   expected lines are checked against its banner, and it is stopped (SIGINT) at the end;
//! - every other command runs, in order, in one bash session (variables carry over), under
//!   `set -o pipefail`, and must exit 0: the tutorial shows an expected failure with
//!   `|| echo "exit code $?"`, so the exit code is checked as output.
//!
//! The cluster runs on loopback with a private `XDG_RUNTIME_DIR` (so the CLI finds it, and no
//! other), the built binary first on `PATH`, each command within a deadline; everything
//! started is killed when the test ends, whether it passes or not.

// A test of processes: it reads their output on threads and waits on wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

/// One `$ ` line and the output expected under it.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The steps of the ```sh blocks of `markdown`.
fn steps(markdown: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_sh = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh || line.trim().is_empty() {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_string(),
                expected: Vec::new(),
            });
        } else {
            let step = steps
                .last_mut()
                .unwrap_or_else(|| panic!("output before any command: {line}"));
            step.expected.push(line.trim().to_string());
        }
    }
    steps
}

/// Whether `line` matches `pattern`, where `...` stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let line = line.trim();
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return line == pattern;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Panics unless every expected line matches some output line.
fn check(step: &Step, output: &[String]) {
    for pattern in &step.expected {
        assert!(
            output.iter().any(|line| matches(pattern, line)),
            "`{}` printed no line matching `{pattern}`; it printed:\n{}",
            step.command,
            output.join("\n")
        );
    }
}

/// A process killed when dropped (and its process group, for bash's children).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: signalling a process (group) this test started.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines read from a child's output on a thread, so reads can have deadlines.
fn line_reader(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn environment(command: &mut Command, runtime: &Path, bin_dir: &Path) {
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    command
        .env("PATH", path)
        .env("XDG_RUNTIME_DIR", runtime)
        .env_remove("RINGCACHE_URL")
        .env_remove("RINGCACHE_CLIENT_TOKEN")
        .env_remove("RINGCACHE_CONFIG");
}

#[test]
fn the_tutorial_runs_as_written() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tutorial.md"))
            .unwrap();
    let steps = steps(&text);
    assert!(steps.len() > 10, "{steps:?}");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_ringcache"));
    let bin_dir = binary.parent().unwrap().to_path_buf();
    let runtime = std::env::temp_dir().join(format!("ringcache-tutorial-{}", std::process::id()));
    std::fs::create_dir_all(&runtime).unwrap();

    let (up_step, rest) = steps.split_first().unwrap();
    assert!(
        up_step.command.starts_with("ringcache up"),
        "the tutorial starts with `ringcache up`: {up_step:?}"
    );
    assert!(rest.iter().all(|s| !s.command.starts_with("ringcache up")));

    // `ringcache up`, as in its own terminal.
    let mut up = Command::new("bash");
    up.args(["-c", &format!("exec {}", up_step.command)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    environment(&mut up, &runtime, &bin_dir);
    let mut up = Guard(up.spawn().unwrap());
    let up_lines = line_reader(up.0.stdout.take().unwrap());
    let mut banner = Vec::new();
    while !banner
        .iter()
        .any(|l: &String| l.starts_with("Ctrl-C stops"))
    {
        let line = up_lines
            .recv_timeout(COMMAND_DEADLINE)
            .unwrap_or_else(|_| panic!("`ringcache up` printed no banner: {banner:?}"));
        banner.push(line);
    }
    check(up_step, &banner);

    // Every other command, in one bash session.
    let mut shell = Command::new("bash");
    shell
        .args(["--noprofile", "--norc"])
        .current_dir(&runtime)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    environment(&mut shell, &runtime, &bin_dir);
    let mut shell = Guard(shell.spawn().unwrap());
    let mut stdin = shell.0.stdin.take().unwrap();
    let lines = line_reader(shell.0.stdout.take().unwrap());
    writeln!(stdin, "exec 2>&1; set -o pipefail").unwrap();
    for (n, step) in rest.iter().enumerate() {
        let done = format!("__tutorial_step_{n}_exit__");
        writeln!(stdin, "{}\necho \"{done} $?\"", step.command).unwrap();
        stdin.flush().unwrap();
        let mut output = Vec::new();
        let status = loop {
            let line = lines.recv_timeout(COMMAND_DEADLINE).unwrap_or_else(|_| {
                panic!(
                    "`{}` did not finish within {COMMAND_DEADLINE:?}; it printed:\n{}",
                    step.command,
                    output.join("\n")
                )
            });
            match line.strip_prefix(&done) {
                Some(status) => break status.trim().to_string(),
                None => output.push(line),
            }
        };
        assert_eq!(
            status,
            "0",
            "`{}` failed (exit {status}); it printed:\n{}",
            step.command,
            output.join("\n")
        );
        check(step, &output);
    }
    drop(stdin);
    drop(shell);

    // Ctrl-C stops `up`, which removes its record.
    // SAFETY: signalling the process this test started.
    unsafe { libc::kill(up.0.id() as i32, libc::SIGINT) };
    let record = runtime.join("ringcache/cluster.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while up.0.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped = up.0.try_wait().unwrap();
    drop(up);
    let record_left = record.exists();
    let _ = std::fs::remove_dir_all(&runtime);
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
    assert!(!record_left, "up removes its record when it stops");
}

#[test]
fn steps_are_commands_with_the_lines_under_them() {
    let md = "text\n```sh\n$ a\nout 1\n\nout ...\n$ b\n```\n```\n$ not run\n```\n```sh\n$ c\n```\n";
    assert_eq!(
        steps(md),
        vec![
            Step {
                command: "a".into(),
                expected: vec!["out 1".into(), "out ...".into()],
            },
            Step {
                command: "b".into(),
                expected: vec![],
            },
            Step {
                command: "c".into(),
                expected: vec![],
            },
        ]
    );
}

#[test]
fn three_dots_stand_for_any_text_and_nothing_else_does() {
    assert!(matches("ok, context: ...", "ok, context: AQEP"));
    assert!(matches("A ... up ...", "A     up     2"));
    assert!(!matches("A ... up ...", "A     down"));
    assert!(!matches("A ... up", "A     up     2"));
    assert!(matches("1...", "1.984"));
    assert!(!matches("1...", "0.984"));
    assert!(matches("hello", "  hello  "));
    assert!(!matches("hello", "hello world"));
    assert!(matches("x ... y ... z", "x 1 y 2 z"));
    assert!(!matches("x ... z ... y", "x 1 y 2 z"));
    assert!(!matches("ab...ba", "aba"));
}
