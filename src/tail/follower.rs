//! The synchronous core: reads a rotating log file into complete lines, keeps a cursor.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fingerprint::{Fingerprint, head_fingerprint, head_matches};
use super::lines::{LineSink, LineSplitter};
use crate::os::trusted::{Opened, Refusal, Trust, folder_is_shared, open_log, stat_at};

/// Where reading stopped: enough to find the same file and position after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub dev: u64,
    pub ino: u64,
    /// Offset just after the last complete line consumed (handed on, or skipped as too long).
    pub offset: u64,
    /// First bytes of the file, to tell it apart from a later file given the same inode.
    pub fingerprint: Fingerprint,
    /// The file read before this one (the archive, while no rotation came since): a restart
    /// tells an archive rotated in while it was down from this older one by it.
    #[serde(default, skip_serializing_if = "Before::is_unknown")]
    pub before: Before,
}

/// The file that came before a cursor's file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Before {
    /// Not recorded (a checkpoint written before this was kept).
    #[default]
    Unknown,
    /// None: there was no archive when the file was opened.
    Nothing,
    File {
        dev: u64,
        ino: u64,
        fingerprint: Fingerprint,
    },
}

impl Before {
    fn is_unknown(&self) -> bool {
        *self == Before::Unknown
    }

    fn of(id: FileId, fingerprint: Fingerprint) -> Before {
        Before::File {
            dev: id.dev,
            ino: id.ino,
            fingerprint,
        }
    }

    /// This is the file open as `file` (same inode and first bytes: inodes are reused).
    fn is(&self, file: &File, meta: &Metadata) -> bool {
        match self {
            Before::File {
                dev,
                ino,
                fingerprint,
            } => {
                FileId::of(meta)
                    == (FileId {
                        dev: *dev,
                        ino: *ino,
                    })
                    && head_matches(file, *fingerprint).unwrap_or(false)
            }
            Before::Unknown | Before::Nothing => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowOptions {
    /// Longest line handed on, its `\n` included; longer lines are skipped and counted.
    pub max_line_bytes: usize,
    /// Size of one read from the file.
    pub read_chunk: usize,
    /// Who may own the file in a folder others can write (see [`super::open`]).
    pub trust: Trust,
    /// The other log: a file that is it (or its archive) is refused, not read twice.
    pub avoid: Option<PathBuf>,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            max_line_bytes: 1024 * 1024,
            read_chunk: 256 * 1024,
            trust: Trust::default(),
            avoid: None,
        }
    }
}

/// What the followed path looked like during a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    Present,
    /// No file at the path (not created yet, or between a rotation's rename and create).
    Missing,
    /// The path exists but could not be examined or opened.
    Unreadable(io::ErrorKind),
    /// The file at the path is not one the agent reads (see [`Refusal`]).
    Refused(Refusal),
}

/// How the saved cursor given to [`Follower::new`] was used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Same file still at the path: reading goes on at the saved offset.
    Exact,
    /// The file was rotated while stopped: its rest is read from the archive, then the new file.
    FromArchive,
    /// Neither the path nor the archive holds the saved file: the current file is read from 0.
    NotFound,
    /// The saved file was rotated away twice while stopped (the path and the archive both
    /// hold other files): the rest of it is lost, a gap to report. The archive, newer than
    /// the saved file, is read in full, then the current file.
    Gap,
}

/// Outcome of one [`Follower::poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poll {
    /// Bytes of complete lines appended to `out`.
    pub bytes: u64,
    /// Lines longer than `max_line_bytes`, skipped.
    pub lines_too_long: u64,
    /// Files finished because the path moved on to a new file.
    pub rotations: u32,
    /// Times the file was found truncated (or rewritten) in place and reread from 0.
    pub truncations: u32,
    /// The byte budget ran out with data left: call again.
    pub more: bool,
    pub file: FileState,
    /// Set on the first poll after [`Follower::new`] with a saved cursor.
    pub resumed: Option<Resume>,
    /// Files newly refused at the path or the archive name (each refused file once).
    pub refused: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(m: &Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// The file being read.
#[derive(Debug)]
struct Source {
    file: File,
    id: FileId,
    /// Bytes read from the file so far (a partial line may sit past `committed`).
    pos: u64,
    /// Offset after the last complete line consumed.
    committed: u64,
    /// Head of the file as last seen; grows until it covers the full fingerprint length.
    fp: Fingerprint,
    /// Drained to its end after the path moved on; only waits for the next file to open.
    finished: bool,
    /// The file read before it.
    before: Before,
}

impl Source {
    fn open_at(file: File, meta: &Metadata, offset: u64) -> io::Result<Source> {
        let fp = head_fingerprint(&file)?;
        Ok(Source {
            file,
            id: FileId::of(meta),
            pos: offset,
            committed: offset,
            fp,
            finished: false,
            before: Before::Unknown,
        })
    }
}

/// A file known to be older than (or the same as) the one being read: found at the archive
/// name when a file was opened, or read to its end before. Never reread from the archive.
#[derive(Debug)]
struct PastFile {
    id: FileId,
    len: u64,
    fp: Fingerprint,
}

/// How many past files are remembered; a few rotations' worth is plenty.
const SEEN_MAX: usize = 8;
/// File switches within one poll, so a storm of rotations cannot keep one call busy forever.
const SWITCHES_PER_POLL: usize = 16;

/// Follows one log path across rotations (rename to `PATH.1`, new file) and truncations.
///
/// Reading is pull-based: [`poll`](Follower::poll) reads what is there now and returns. The
/// async [`Tailer`](super::Tailer) decides when to call it.
pub struct Follower {
    path: PathBuf,
    archive: PathBuf,
    opts: FollowOptions,
    src: Option<Source>,
    /// Saved cursor, applied by the first poll.
    start: Option<Cursor>,
    lines: LineSplitter,
    chunk: Vec<u8>,
    seen: VecDeque<PastFile>,
    /// Last file refused at the path and at the archive name, so each is counted once.
    refused: [Option<(FileId, Refusal)>; 2],
}

/// Which name a file was opened under.
#[derive(Clone, Copy)]
enum Name {
    Path = 0,
    Archive = 1,
}

impl Follower {
    /// Follows `path`. With `start`, reading resumes from that cursor if the file can still be
    /// found (see [`Resume`]); without, an existing file is read from its start.
    pub fn new(path: PathBuf, start: Option<Cursor>, opts: FollowOptions) -> Follower {
        let mut archive: OsString = path.clone().into_os_string();
        archive.push(".1");
        let read_chunk = opts.read_chunk.max(1);
        Follower {
            archive: PathBuf::from(archive),
            lines: LineSplitter::new(opts.max_line_bytes),
            chunk: vec![0; read_chunk],
            path,
            opts,
            src: None,
            start,
            seen: VecDeque::new(),
            refused: [None, None],
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Name the file is rotated to (`PATH.1`).
    pub fn archive_path(&self) -> &Path {
        &self.archive
    }

    pub fn options(&self) -> &FollowOptions {
        &self.opts
    }

    /// Position after the last complete line consumed (`None` before any file was opened).
    /// Before the first poll it is the saved cursor given to [`new`](Follower::new), so
    /// saving a checkpoint early does not lose the position.
    pub fn cursor(&self) -> Option<Cursor> {
        match &self.src {
            Some(s) => Some(Cursor {
                dev: s.id.dev,
                ino: s.id.ino,
                offset: s.committed,
                fingerprint: s.fp,
                before: s.before.clone(),
            }),
            None => self.start.clone(),
        }
    }

    /// Bytes of memory held for line assembly (partial line + read buffer), for tests and
    /// diagnostics: stays bounded by the options whatever the input.
    pub fn buffered_capacity(&self) -> usize {
        self.lines.capacity() + self.chunk.capacity()
    }

    /// Reads what is available now, following rotation and truncation, and appends complete
    /// lines (each with its `\n`; a `\r` before it is left in place) to `out`. Stops after
    /// about `max_bytes` bytes read, setting [`Poll::more`], so a large backlog comes in
    /// bounded batches.
    ///
    /// Open and stat failures are reported in [`Poll::file`], not as errors; an error is a
    /// failed read of an open file, returned only when nothing was appended to `out` by this
    /// call, and the next poll retries from the same position.
    pub fn poll(&mut self, out: &mut impl LineSink, max_bytes: usize) -> io::Result<Poll> {
        let mut p = Poll {
            bytes: 0,
            lines_too_long: 0,
            rotations: 0,
            truncations: 0,
            more: false,
            file: FileState::Present,
            resumed: None,
            refused: 0,
        };
        if let Some(c) = self.start.take() {
            p.resumed = Some(self.resume(&c, &mut p));
        }
        let mut budget = max_bytes.max(1);
        let mut switches = 0;
        loop {
            let at_path = self.stat_path(&mut p);
            if self.src.is_none() {
                if !matches!(at_path, PathState::Is(_)) {
                    return Ok(p);
                }
                match self.open_fresh(&mut p) {
                    Some(src) => self.src = Some(src),
                    None => return Ok(p),
                }
                continue;
            }
            let src_id = self.src.as_ref().map(|s| s.id);
            if !self.src.as_ref().is_some_and(|s| s.finished) {
                // Also for a file just rotated away: it may have been truncated before the
                // rename, and reading on at the old offset would hand on a torn line.
                // Stat first, then read to the end: whatever the writer put in our file
                // before it was renamed away is read before we leave it.
                let drained = self
                    .check_truncation(&mut p)
                    .and_then(|()| self.drain(out, &mut budget, &mut p));
                match drained {
                    Ok(true) => {}
                    Ok(false) => {
                        p.more = true;
                        return Ok(p);
                    }
                    // Lines already appended are consumed (the cursor is past them): hand
                    // them on; the error comes back on the next call.
                    Err(_) if p.bytes > 0 => {
                        p.more = true;
                        return Ok(p);
                    }
                    Err(e) => return Err(e),
                }
            }
            if !matches!(at_path, PathState::Is(id) if Some(id) != src_id) {
                // Still the current file, or the path is missing / unknown: wait on this one.
                return Ok(p);
            }
            // The path names another file: ours was rotated away and is read to its end.
            let src = self.src.as_mut().expect("source checked above");
            if !src.finished {
                src.finished = true;
                // Nothing more will be written to it: a trailing partial line is a line.
                p.bytes += self.lines.finish(out);
                src.committed = src.pos;
                p.rotations += 1;
            }
            match self.open_successor(&mut p) {
                Some(mut next) => {
                    next.before = self.before_of(&next, &mut p);
                    let old = self.src.replace(next).expect("source checked above");
                    self.remember_own(old);
                }
                None => return Ok(p),
            }
            switches += 1;
            if switches >= SWITCHES_PER_POLL {
                p.more = true;
                return Ok(p);
            }
        }
    }

    /// Reads the source to its end (true) or until the budget runs out (false).
    fn drain(
        &mut self,
        out: &mut impl LineSink,
        budget: &mut usize,
        p: &mut Poll,
    ) -> io::Result<bool> {
        let src = self.src.as_mut().expect("drain needs a source");
        loop {
            if *budget == 0 {
                return Ok(false);
            }
            let want = self.chunk.len().min(*budget);
            let n = match src.file.read_at(&mut self.chunk[..want], src.pos) {
                Ok(0) => return Ok(true),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(with_path(e, "reading", &self.path)),
            };
            let fed = self.lines.feed(&self.chunk[..n], out);
            if let Some(end) = fed.last_newline_end {
                src.committed = src.pos + end as u64;
            }
            src.pos += n as u64;
            *budget -= n;
            p.bytes += fed.handed;
            p.lines_too_long += fed.too_long;
        }
    }

    /// Truncated (shorter than what we read) or rewritten (other first bytes) in place:
    /// start again from 0. Also extends the fingerprint while the file is still small.
    fn check_truncation(&mut self, p: &mut Poll) -> io::Result<()> {
        let src = self.src.as_mut().expect("check needs a source");
        let ctx = |e| with_path(e, "checking", &self.path);
        let len = src.file.metadata().map_err(ctx)?.len();
        if len < src.pos || !head_matches(&src.file, src.fp).map_err(ctx)? {
            tracing::debug!(path = %self.path.display(), len, pos = src.pos, "log truncated in place");
            p.truncations += 1;
            src.pos = 0;
            src.committed = 0;
            src.fp = Fingerprint::EMPTY;
            self.lines.reset();
        }
        if !src.fp.is_full() && len > u64::from(src.fp.len) {
            src.fp = head_fingerprint(&src.file).map_err(ctx)?;
        }
        Ok(())
    }

    fn stat_path(&self, p: &mut Poll) -> PathState {
        match stat_at(&self.path, self.shared()) {
            Ok(m) => {
                p.file = FileState::Present;
                PathState::Is(FileId::of(&m))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                p.file = FileState::Missing;
                PathState::Missing
            }
            Err(e) => {
                p.file = FileState::Unreadable(e.kind());
                PathState::Unknown
            }
        }
    }

    /// Opens the path from 0 with no predecessor (start, or the saved cursor was not found).
    fn open_fresh(&mut self, p: &mut Poll) -> Option<Source> {
        // The archive present now is older than the file we are about to open: recorded
        // before opening, so a rotation in between cannot make us skip a newer archive.
        let before = match self.open_existing(Name::Archive, p) {
            Some((file, meta)) => self.remember_archive(&file, &meta),
            None => Before::Nothing,
        };
        let mut src = self.open_path(p)?;
        src.before = before;
        Some(src)
    }

    fn open_path(&mut self, p: &mut Poll) -> Option<Source> {
        let opened = self.open_checked(Name::Path).and_then(|o| match o {
            Ok((f, m)) => Source::open_at(f, &m, 0).map(Ok),
            Err(r) => Ok(Err(r)),
        });
        match opened {
            Ok(Ok(src)) => {
                p.file = FileState::Present;
                Some(src)
            }
            Ok(Err((id, r))) => {
                self.note_refusal(Name::Path, id, r, p);
                p.file = FileState::Refused(r);
                None
            }
            Err(e) => {
                p.file = if e.kind() == io::ErrorKind::NotFound {
                    FileState::Missing
                } else {
                    tracing::debug!(path = %self.path.display(), error = %e, "cannot open log");
                    FileState::Unreadable(e.kind())
                };
                None
            }
        }
    }

    /// The file to read after the current one: normally the new file at the path; but if
    /// the archive holds a file we have not seen, more than one rotation happened since we
    /// last looked, and that archive (newer than ours, older than the path's) comes first.
    fn open_successor(&mut self, p: &mut Poll) -> Option<Source> {
        if let Some(src) = self.unseen_archive(None, p) {
            return Some(src);
        }
        let next = self.open_path(p)?;
        // A rotation between the archive check and the open would have put an unread file
        // at the archive name: look again.
        if let Some(src) = self.unseen_archive(Some(next.id), p) {
            return Some(src);
        }
        Some(next)
    }

    /// What the cursor records as the file before `next`: the archive now, unless that is
    /// `next` itself (then the file being left). Not simply the file being left: an archive
    /// skipped as already seen must not look, after a restart, like one rotated in since.
    fn before_of(&mut self, next: &Source, p: &mut Poll) -> Before {
        if let Some((file, meta)) = self.open_existing(Name::Archive, p)
            && FileId::of(&meta) != next.id
            && let Ok(fp) = head_fingerprint(&file)
        {
            return Before::of(FileId::of(&meta), fp);
        }
        let old = self.src.as_ref().expect("a file being left");
        Before::of(old.id, head_fingerprint(&old.file).unwrap_or(old.fp))
    }

    fn unseen_archive(&mut self, not: Option<FileId>, p: &mut Poll) -> Option<Source> {
        let (file, meta) = self.open_existing(Name::Archive, p)?;
        let id = FileId::of(&meta);
        let cur = self.src.as_ref().map(|s| s.id);
        if Some(id) == cur || Some(id) == not || self.is_seen(&file, id, meta.len()) {
            return None;
        }
        tracing::debug!(path = %self.archive.display(), "reading an archive rotated past us");
        Source::open_at(file, &meta, 0).ok()
    }

    fn is_seen(&self, file: &File, id: FileId, len: u64) -> bool {
        self.seen.iter().any(|s| {
            // Inodes are reused: the head must match too, and for a tiny head the length.
            s.id == id
                && (s.fp.is_full() || s.len == len)
                && head_matches(file, s.fp).unwrap_or(false)
        })
    }

    fn remember(&mut self, seen: PastFile) {
        self.seen.retain(|s| s.id != seen.id);
        if self.seen.len() >= SEEN_MAX {
            self.seen.pop_front();
        }
        self.seen.push_back(seen);
    }

    /// Remembers the archive as seen; returns it as the next file's predecessor.
    fn remember_archive(&mut self, file: &File, meta: &Metadata) -> Before {
        match head_fingerprint(file) {
            Ok(fp) => {
                self.remember(PastFile {
                    id: FileId::of(meta),
                    len: meta.len(),
                    fp,
                });
                Before::of(FileId::of(meta), fp)
            }
            Err(_) => Before::Unknown,
        }
    }

    fn remember_own(&mut self, old: Source) {
        // Its length now; a late write to it after we left would make it look unseen only
        // for a tiny file (a full fingerprint matches regardless of length).
        let len = old.file.metadata().map(|m| m.len()).unwrap_or(old.pos);
        let fp = head_fingerprint(&old.file).unwrap_or(old.fp);
        self.remember(PastFile {
            id: old.id,
            len,
            fp,
        });
    }

    fn name(&self, name: Name) -> &Path {
        match name {
            Name::Path => &self.path,
            Name::Archive => &self.archive,
        }
    }

    /// Whether the log's folder can be written by others; looked at for every open, since
    /// a folder's mode can change while the agent runs.
    fn shared(&self) -> bool {
        folder_is_shared(&self.path, self.opts.trust)
    }

    /// Opens `name` under the rules of [`super::open`]: the file, or why it was refused.
    fn open_checked(&self, name: Name) -> io::Result<Result<(File, Metadata), (FileId, Refusal)>> {
        let path = self.name(name);
        match open_log(path, self.shared(), self.opts.trust)? {
            Opened::Refused(r) => {
                let id = stat_at(path, true)
                    .map(|m| FileId::of(&m))
                    .unwrap_or(FileId { dev: 0, ino: 0 });
                Ok(Err((id, r)))
            }
            Opened::File(f, m) => {
                let id = FileId::of(&m);
                if self.is_avoided(id) {
                    Ok(Err((id, Refusal::SameAsOther)))
                } else {
                    Ok(Ok((f, m)))
                }
            }
        }
    }

    /// An archive or a saved file, if there is one the agent may read; a refusal is counted.
    fn open_existing(&mut self, name: Name, p: &mut Poll) -> Option<(File, Metadata)> {
        match self.open_checked(name).ok()? {
            Ok(fm) => Some(fm),
            Err((id, r)) => {
                self.note_refusal(name, id, r, p);
                None
            }
        }
    }

    /// The other log or its archive is this file.
    fn is_avoided(&self, id: FileId) -> bool {
        let Some(other) = &self.opts.avoid else {
            return false;
        };
        let mut archive = other.clone().into_os_string();
        archive.push(".1");
        [other.as_path(), Path::new(&archive)]
            .iter()
            .any(|p| fs::metadata(p).is_ok_and(|m| FileId::of(&m) == id))
    }

    /// Counts a refusal once per file and name, and says so in the agent's log.
    fn note_refusal(&mut self, name: Name, id: FileId, r: Refusal, p: &mut Poll) {
        let slot = &mut self.refused[name as usize];
        if *slot != Some((id, r)) {
            *slot = Some((id, r));
            p.refused += 1;
            crate::logging::warn_throttled!(path = %self.name(name).display(), reason = %r, "log file refused");
        }
    }

    /// Finds the saved file: at the path (same inode, long enough, same first bytes), else at
    /// the archive name (rotated while stopped).
    ///
    /// Inodes are reused (ext4 hands a deleted file's inode to the next new one), so a file
    /// is the saved one only with the same first bytes too, and the path holding the saved
    /// inode says nothing by itself. What tells "rotated twice while stopped" from "rewritten
    /// in place" is the archive: the one the cursor recorded (older than the saved file) or
    /// none then, versus another one, rotated in since.
    fn resume(&mut self, c: &Cursor, p: &mut Poll) -> Resume {
        let want = FileId {
            dev: c.dev,
            ino: c.ino,
        };
        let is_saved = |file: &File, meta: &Metadata| {
            FileId::of(meta) == want
                && meta.len() >= c.offset
                && head_matches(file, c.fingerprint).unwrap_or(false)
        };
        let archive = self.open_existing(Name::Archive, p);
        let path_id = stat_at(&self.path, self.shared())
            .ok()
            .map(|m| FileId::of(&m));
        // An archive the cursor did not know, not the saved file, not the current one.
        let newer_archive = archive.as_ref().is_some_and(|(file, meta)| {
            Some(FileId::of(meta)) != path_id
                && !is_saved(file, meta)
                && match &c.before {
                    // Recorded before: the old rule, the current file another inode.
                    Before::Unknown => path_id.is_some_and(|id| id != want),
                    Before::Nothing => true,
                    b @ Before::File { .. } => !b.is(file, meta),
                }
        });
        let at = |src: Source, before: Before| Source { before, ..src };
        if !newer_archive
            && let Some((file, meta)) = self.open_existing(Name::Path, p)
            && is_saved(&file, &meta)
            && let Ok(src) = Source::open_at(file, &meta, c.offset)
        {
            self.src = Some(at(src, c.before.clone()));
            return Resume::Exact;
        }
        let archive_saved = archive.as_ref().is_some_and(|(f, m)| is_saved(f, m));
        let from = if archive_saved { c.offset } else { 0 };
        if let Some((file, meta)) = archive
            && (archive_saved || newer_archive)
            && let Ok(src) = Source::open_at(file, &meta, from)
        {
            if archive_saved {
                self.src = Some(at(src, c.before.clone()));
                return Resume::FromArchive;
            }
            // (Were the saved file deleted rather than rotated, and the archive not the one
            // recorded, it would be read again: rotation is what the proxy does.)
            tracing::warn!(path = %self.path.display(), "the file being read was rotated away twice while stopped: its unread rest is lost; reading the archive, then the current file");
            self.src = Some(at(src, Before::of(want, c.fingerprint)));
            return Resume::Gap;
        }
        tracing::info!(path = %self.path.display(), "saved log position not found; reading from the start");
        Resume::NotFound
    }
}

impl std::fmt::Debug for Follower {
    // Not derived: the read buffer would print hundreds of kilobytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("path", &self.path)
            .field("cursor", &self.cursor())
            .field("pending_bytes", &self.lines.pending_len())
            .finish_non_exhaustive()
    }
}

enum PathState {
    Is(FileId),
    Missing,
    /// Could not stat (e.g. permissions): do not conclude anything about rotation.
    Unknown,
}

fn with_path(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}
