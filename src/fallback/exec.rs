//! Running the system's tools: judged by exit code, failures carry stderr.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::BackendError;

/// Output of a command that exited 0.
pub(crate) struct Ran {
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args...`, feeding `stdin` when given. Exit code decides success: pfctl writes
/// warnings to stderr even when it succeeds.
pub(crate) fn run<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    stdin: Option<&str>,
) -> Result<Ran, BackendError> {
    let command = describe(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BackendError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let Some(input) = stdin {
        // Dropping the handle at the end of this block closes the pipe: the tool sees EOF.
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input.as_bytes())
            .map_err(|source| BackendError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| BackendError::Spawn {
            command: command.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(Ran { stdout, stderr })
    } else {
        let stderr = stderr.trim();
        Err(BackendError::Failed {
            command,
            status: out.status.to_string(),
            stderr: if stderr.is_empty() {
                "(no stderr)".into()
            } else {
                stderr.to_owned()
            },
        })
    }
}

fn describe<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> String {
    let mut s = program.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}
