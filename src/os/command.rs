//! The one way the agent runs the system's tools (pfctl, ip, route, netstat, sysctl): a
//! configured program, a timeout, optional stdin, stdout and stderr captured, and errors that
//! carry the command line, the exit status and what the tool wrote to stderr.
//!
//! Success is the exit status alone: pfctl writes warnings ("No ALTQ support in kernel") to
//! stderr when it succeeds. A tool that does not answer in time is killed with its process
//! group, so a hung pfctl cannot stall a probe round or a revert.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use wait_timeout::ChildExt as _;

/// Long enough for pfctl to load an anchor on a busy Mac, short enough that a hung tool does
/// not outlive a probe round.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the tools are and how long each may take. The paths of pfctl and ip come from the
/// configuration (`fallback.pfctl_path`, `fallback.ip_path`); route, netstat and sysctl are
/// part of macOS at fixed places.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tools {
    pub pfctl: PathBuf,
    pub ip: PathBuf,
    pub route: PathBuf,
    pub netstat: PathBuf,
    pub sysctl: PathBuf,
    pub timeout: Duration,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            pfctl: "/sbin/pfctl".into(),
            ip: "/sbin/ip".into(),
            route: "/sbin/route".into(),
            netstat: "/usr/sbin/netstat".into(),
            sysctl: "/usr/sbin/sysctl".into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What a command that exited 0 wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{command}: could not run: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command}: {status}: {}", shown(stderr))]
    Failed {
        command: String,
        /// As the OS words it: `exit status: 1`, `signal: 9 (SIGKILL)`.
        status: String,
        code: Option<i32>,
        stdout: String,
        stderr: String,
    },
    #[error("{command}: no answer within {} s; killed", timeout.as_secs_f64())]
    Timeout { command: String, timeout: Duration },
}

impl CommandError {
    /// What the tool wrote to stderr, when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            CommandError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

fn shown(stderr: &str) -> &str {
    match stderr.trim() {
        "" => "(no stderr)",
        s => s,
    }
}

/// Runs `program args...` with `stdin` fed and closed (the tool sees EOF), waiting at most
/// `timeout`.
///
/// Called on a worker of a multi-thread runtime (the daemon runs one worker), the wait hands
/// that worker's other tasks to another thread first, so a slow pfctl does not stall
/// `/metrics` or the log; elsewhere (the CLI, a blocking thread, a current-thread test
/// runtime, where `block_in_place` would panic) it simply waits.
pub fn run<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Output, CommandError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| run_here(program, args, stdin, timeout))
        }
        _ => run_here(program, args, stdin, timeout),
    }
}

fn run_here<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Output, CommandError> {
    let command = describe(program, args);
    let spawn_error = |source| CommandError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills whatever the tool started too.
        .process_group(0)
        .spawn()
        .map_err(spawn_error)?;
    // Readers and the writer run beside the wait, so a tool that fills a pipe before reading
    // its input (or before exiting) cannot deadlock with us.
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        let input = input.to_owned();
        std::thread::spawn(move || pipe.write_all(input.as_bytes()))
    });
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = match child.wait_timeout(timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            kill_group(&mut child);
            let _ = (stdout.join(), stderr.join());
            return Err(CommandError::Timeout { command, timeout });
        }
        Err(e) => {
            kill_group(&mut child);
            return Err(spawn_error(e));
        }
    };
    let stdout = text(stdout);
    let stderr = text(stderr);
    // A tool that exits without reading all its input breaks the pipe: its status decides.
    if let Some(w) = writer {
        let _ = w.join();
    }
    if status.success() {
        Ok(Output { stdout, stderr })
    } else {
        Err(CommandError::Failed {
            command,
            status: status.to_string(),
            code: status.code(),
            stdout,
            stderr,
        })
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

fn text(h: JoinHandle<Vec<u8>>) -> String {
    String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
}

fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the group the child leads; no memory is
        // touched.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The command line as a person would type it, for error messages.
pub fn describe<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> String {
    let mut s = program.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Arguments built from a mix of `&str` and owned strings.
pub fn args<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    items.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const SH: &str = "/bin/sh";
    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn stdin_reaches_the_tool_and_both_streams_come_back() {
        let out = run(
            Path::new(SH),
            &["-c", "tr a-z A-Z; echo warning >&2"],
            Some("token : 7\n"),
            10 * SECOND,
        )
        .unwrap();
        assert_eq!(out.stdout, "TOKEN : 7\n");
        assert_eq!(out.stderr, "warning\n");
    }

    #[test]
    fn a_failure_names_the_command_its_status_and_stderr() {
        let err = run(
            Path::new(SH),
            &[
                "-c",
                "echo partial; echo 'stdin:3: syntax error' >&2; exit 3",
            ],
            None,
            10 * SECOND,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/bin/sh -c echo partial;"),
            "command line: {msg}"
        );
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.ends_with("stdin:3: syntax error"), "{msg}");
        match err {
            CommandError::Failed { code, stdout, .. } => {
                assert_eq!((code, stdout.as_str()), (Some(3), "partial\n"));
            }
            other => panic!("{other:?}"),
        }
        let quiet = run(Path::new(SH), &["-c", "exit 1"], None, 10 * SECOND).unwrap_err();
        assert!(quiet.to_string().ends_with("(no stderr)"), "{quiet}");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error_with_its_path() {
        let err = run(Path::new("/nonexistent/pfctl"), &["-E"], None, SECOND).unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/pfctl -E: could not run")
        );
    }

    #[test]
    fn a_hung_tool_is_killed_with_what_it_started() {
        let started = Instant::now();
        // The shell's child holds the pipes too: only killing the group ends the reads.
        let err = run(
            Path::new(SH),
            &["-c", "sleep 30 & sleep 30"],
            None,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains("no answer within 0.3 s"), "{err}");
        assert!(started.elapsed() < 10 * SECOND, "{:?}", started.elapsed());
    }

    #[test]
    fn a_tool_run_on_the_only_worker_does_not_stall_the_other_tasks() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("flag");
        let script = format!(
            "while [ ! -e '{}' ]; do sleep 0.02; done; echo seen",
            flag.display()
        );
        rt.block_on(async {
            // The tool waits for a file only another task on this runtime creates.
            let other = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                std::fs::write(flag, "").unwrap();
            });
            let tool =
                tokio::spawn(
                    async move { run(Path::new(SH), &["-c", &script], None, 10 * SECOND) },
                );
            assert_eq!(tool.await.unwrap().unwrap().stdout, "seen\n");
            other.await.unwrap();
        });
    }

    #[tokio::test]
    async fn a_current_thread_runtime_just_waits() {
        let out = run(Path::new(SH), &["-c", "echo ok"], None, 10 * SECOND).unwrap();
        assert_eq!(out.stdout, "ok\n");
    }

    #[test]
    fn a_tool_that_ignores_large_input_is_judged_by_its_status() {
        let big = "x".repeat(1 << 20);
        let out = run(Path::new(SH), &["-c", "echo done"], Some(&big), 10 * SECOND).unwrap();
        assert_eq!(out.stdout, "done\n");
    }
}
