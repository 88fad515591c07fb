//! Lossless follower of a rotating log file.
//!
//! PIA's split-tunnel proxy writes `transparent_proxy.log` (CRLF lines) and rotates it at
//! 512,000 bytes by renaming it to `transparent_proxy.log.1` (one archive, overwritten at each
//! rotation) and creating a new empty file; when busy that happens every few minutes.
//!
//! # Why the agent reads the file itself
//!
//! The usual crate for this, linemux 0.3, was measured against exactly that rotation scheme:
//! it loses lines written just before and after the rename, splits a partial line in two,
//! mishandles truncation, and in a burst of rotations hangs with a core at 100% (aborting the
//! task cannot stop it). An exporter that under-counts or wedges is worse than none, so the
//! reading is owned here:
//!
//! - [`Follower`] (synchronous, testable without a runtime) keeps one [`Cursor`] per file:
//!   device, inode, offset after the last complete line, and a [`Fingerprint`] of the first
//!   bytes. When the path names another inode, the old open descriptor (the file now at
//!   `.1`) is read to its end before switching, and the new file is read from 0. A file
//!   shorter than what was read, or with other first bytes, was truncated in place and is
//!   reread from 0. Only complete lines are handed on; over-long lines are skipped and
//!   counted with bounded memory.
//! - [`Tailer`] (async) polls the follower on events from a watch of the *parent folder*
//!   (the file itself is replaced at rotation) and on a backstop timer, so a lost event costs
//!   latency, never data. On Linux the folder is watched only for names coming and going and
//!   the file at our names for writes, so writes to other files in `/tmp` raise no event.
//! - [`crate::os::store::CheckpointStore`] saves the cursor atomically so a restart resumes where it stopped,
//!   including from the archive if a rotation happened meanwhile.

mod fingerprint;
mod follower;
pub(crate) mod lines;
mod tailer;

pub use crate::os::trusted::{Refusal, Trust};
pub use fingerprint::{FINGERPRINT_BYTES, Fingerprint};
pub use follower::{Before, Cursor, FileState, FollowOptions, Follower, Poll, Resume};
pub use lines::{LineSink, Lines};
pub use tailer::Tailer;
