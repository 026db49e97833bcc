//! Running a child process with a hard timeout while capturing (and optionally streaming)
//! its output line by line.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

/// How often the parent checks whether the child has exited; small next to a boot.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Whether output is echoed to the terminal as it arrives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Print each line as it arrives (and keep it).
    Stream,
    /// Only keep it; the caller decides whether to print it.
    Capture,
    /// Print each line as it arrives unless it contains this marker (bulk data such as
    /// benchmark samples); keep every line.
    StreamExcept(&'static str),
}

impl Echo {
    fn shows(self, line: &str) -> bool {
        match self {
            Echo::Stream => true,
            Echo::Capture => false,
            Echo::StreamExcept(marker) => !line.contains(marker),
        }
    }
}

/// How the child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status code.
    Code(i32),
    /// It was killed by this signal (not by us).
    Signal(i32),
    /// It ran past this timeout and we killed it.
    TimedOut(Duration),
}

/// What a finished (or killed) child left behind.
#[derive(Debug)]
pub struct Outcome {
    pub exit: Exit,
    /// Lines the child wrote to stdout: for QEMU, the guest's serial console.
    pub console: Vec<String>,
    /// Lines the child wrote to stderr: for QEMU, its own diagnostics.
    pub stderr: Vec<String>,
}

/// Runs `command` to completion, killing it after `timeout`. Stdin is closed so that a
/// child such as QEMU with `-serial stdio` never puts the terminal into raw mode.
pub fn run_with_timeout(mut command: Command, timeout: Duration, echo: Echo) -> anyhow::Result<Outcome> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", display_command(&command)))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let stdout_reader = thread::spawn(move || collect_lines(stdout, echo, std::io::stdout()));
    let stderr_reader = thread::spawn(move || collect_lines(stderr, echo, std::io::stderr()));

    let deadline = Instant::now() + timeout;
    let exit = loop {
        if let Some(status) = child.try_wait().context("waiting for child")? {
            break match status.code() {
                Some(code) => Exit::Code(code),
                None => Exit::Signal(status.signal().unwrap_or(0)),
            };
        }
        if Instant::now() >= deadline {
            // SIGKILL: QEMU is one process, so this takes all its vCPU threads with it.
            // An error here means it exited just now, which is fine.
            let _ = child.kill();
            child.wait().context("waiting for killed child")?;
            break Exit::TimedOut(timeout);
        }
        thread::sleep(POLL_INTERVAL);
    };
    // The pipes close when the child dies, so the readers finish promptly.
    let console = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    Ok(Outcome { exit, console, stderr })
}

/// Reads `source` to the end, splitting it into lines (without `\r\n`), echoing each line to
/// `sink` when streaming. Invalid UTF-8 is kept lossily: a garbled console is still evidence.
fn collect_lines(source: impl Read, echo: Echo, mut sink: impl Write) -> Vec<String> {
    let mut reader = BufReader::new(source);
    let mut lines = Vec::new();
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                if echo.shows(&line) {
                    let _ = writeln!(sink, "{line}");
                    let _ = sink.flush();
                }
                lines.push(line);
            }
        }
    }
    lines
}

/// The command as a shell-like line, for logs and for reproducing a run by hand.
pub fn display_command(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|arg| {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains([' ', '\'', '"']) {
            format!("'{}'", arg.replace('\'', r"'\''"))
        } else {
            arg.into_owned()
        }
    }));
    words.join(" ")
}

/// Prints the last `count` lines of `lines`, framed so they stand out in a long log.
pub fn print_tail(lines: &[String], count: usize) {
    let start = lines.len().saturating_sub(count);
    println!("---- last {} console lines ----", lines.len() - start);
    for line in &lines[start..] {
        println!("{line}");
    }
    println!("---- end of console ----");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_lines_without_line_endings() {
        let lines = collect_lines(&b"one\r\ntwo\nthree"[..], Echo::Capture, std::io::sink());
        assert_eq!(lines, ["one", "two", "three"]);
    }

    #[test]
    fn streams_all_but_marked_lines() {
        assert!(Echo::StreamExcept("DATA").shows("bench: case 1"));
        assert!(!Echo::StreamExcept("DATA").shows("DATA 1,2,3"));
        assert!(Echo::Stream.shows("DATA") && !Echo::Capture.shows("x"));
    }

    #[test]
    fn quotes_arguments_with_spaces() {
        let mut command = Command::new("qemu");
        command.args(["-append", "test fault=pf", "-m", "512M"]);
        assert_eq!(display_command(&command), "qemu -append 'test fault=pf' -m 512M");
    }

    #[test]
    fn kills_a_child_that_runs_past_its_timeout() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; exec sleep 30"]);
        let outcome = run_with_timeout(command, Duration::from_millis(300), Echo::Capture).unwrap();
        assert_eq!(outcome.exit, Exit::TimedOut(Duration::from_millis(300)));
        assert_eq!(outcome.console, ["started"]);
    }

    #[test]
    fn reports_the_exit_code() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo oops >&2; exit 35"]);
        let outcome = run_with_timeout(command, Duration::from_secs(10), Echo::Capture).unwrap();
        assert_eq!(outcome.exit, Exit::Code(35));
        assert_eq!(outcome.stderr, ["oops"]);
    }
}
