//! Model-based test of the follower against real files: random writes, rotations (exactly as
//! the proxy does them: rename to `.1`, overwriting the old archive, then create), truncations
//! in place and polls with random budgets. The model is the list of lines written; it knows
//! which lines were destroyed before the follower could read them (archive overwritten while
//! the follower held an older file; file truncated), and the follower must hand on exactly the
//! other lines, in order, none lost, none duplicated.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use pia_split_tunnel_exporter::tail::{Before, Cursor, Fingerprint, FollowOptions, Follower};
use proptest::prelude::*;

/// Every line starts with a unique sequence number, so no two file heads look alike (the
/// follower tells files apart by inode *and* first bytes, and inodes get reused).
const SEQ_PREFIX: usize = 10;

#[derive(Debug, Clone)]
enum Op {
    /// Complete lines (padding lengths); the pending partial line, if any, is completed first.
    Append {
        pads: Vec<usize>,
        partial: Option<(usize, usize)>,
    },
    /// Also ends a pending partial line: the follower hands it on as a line.
    Rotate,
    /// Truncate to 0 in place, then optionally regrow (possibly past the old offset).
    Truncate {
        regrow: Vec<usize>,
    },
    Poll {
        budget: usize,
    },
    /// Save the cursor, drop the follower, and start a new one from the saved cursor (it
    /// resumes at its next poll, after whatever ops come in between).
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let pad = 0usize..120;
    prop_oneof![
        4 => (
            prop::collection::vec(pad.clone(), 0..6),
            prop::option::of((pad.clone(), 0usize..200)),
        )
            .prop_map(|(pads, partial)| Op::Append { pads, partial }),
        1 => Just(Op::Rotate),
        1 => Just(Op::Restart),
        1 => prop::collection::vec(pad, 0..8).prop_map(|regrow| Op::Truncate { regrow }),
        3 => prop_oneof![1usize..64, 64usize..4000, Just(usize::MAX)]
            .prop_map(|budget| Op::Poll { budget }),
    ]
}

struct LineRec {
    bytes: Vec<u8>,
    generation: usize,
    lost: bool,
}

struct Model {
    path: PathBuf,
    archive: PathBuf,
    max_line: usize,
    lines: Vec<LineRec>,
    /// Inode of each file ever created at the path; the last is at the path, the one before
    /// may be at the archive name.
    inodes: Vec<u64>,
    /// Line being written without its newline yet: full bytes, bytes written so far.
    partial: Option<(Vec<u8>, usize)>,
    seq: u64,
    /// Generation the follower has open (from its cursor), after the last poll.
    held: Option<usize>,
    /// After a restart: the cursor saved (its file no longer held open).
    resume_from: Option<Cursor>,
    /// Generations truncated since the last poll.
    truncated: Vec<usize>,
    opts: FollowOptions,
    out: Vec<u8>,
}

impl Model {
    fn new(dir: &Path, max_line: usize) -> Model {
        let path = dir.join("transparent_proxy.log");
        File::create(&path).unwrap();
        let ino = fs::metadata(&path).unwrap().ino();
        Model {
            archive: dir.join("transparent_proxy.log.1"),
            path,
            max_line,
            lines: Vec::new(),
            inodes: vec![ino],
            partial: None,
            seq: 0,
            held: None,
            resume_from: None,
            truncated: Vec::new(),
            opts: FollowOptions {
                max_line_bytes: max_line,
                read_chunk: 1,
                ..FollowOptions::default()
            },
            out: Vec::new(),
        }
    }

    fn next_line(&mut self, pad: usize) -> Vec<u8> {
        self.seq += 1;
        format!("L{:08}|{}\r\n", self.seq, "x".repeat(pad)).into_bytes()
    }

    fn write(&self, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(&self.path).unwrap();
        f.write_all(bytes).unwrap();
    }

    fn record(&mut self, bytes: Vec<u8>) {
        self.lines.push(LineRec {
            bytes,
            generation: self.inodes.len() - 1,
            lost: false,
        });
    }

    fn eligible(&self, l: &LineRec) -> bool {
        !l.lost && l.bytes.len() <= self.max_line
    }

    fn handed(&self) -> usize {
        self.out.iter().filter(|&&b| b == b'\n').count()
    }

    /// Lines of `generation` not handed on yet are destroyed.
    fn lose_unread(&mut self, generation: usize) {
        let handed = self.handed();
        let mut idx = 0;
        for i in 0..self.lines.len() {
            let eligible = self.eligible(&self.lines[i]);
            let l = &mut self.lines[i];
            if l.generation == generation && (!eligible || idx >= handed) {
                l.lost = true;
            }
            if eligible {
                idx += 1;
            }
        }
    }

    fn expected(&self) -> Vec<u8> {
        self.lines
            .iter()
            .filter(|l| self.eligible(l))
            .flat_map(|l| l.bytes.iter().copied())
            .collect()
    }

    fn apply(&mut self, op: &Op, follower: &mut Follower) {
        match op {
            Op::Append { pads, partial } => {
                let mut buf = Vec::new();
                if let Some((line, written)) = self.partial.take() {
                    buf.extend_from_slice(&line[written..]);
                    self.record(line);
                }
                for &pad in pads {
                    let line = self.next_line(pad);
                    buf.extend_from_slice(&line);
                    self.record(line);
                }
                if let Some((pad, cut)) = *partial {
                    let line = self.next_line(pad);
                    // Cut after the sequence number, before the newline.
                    let written = SEQ_PREFIX + cut % (line.len() - SEQ_PREFIX - 1);
                    buf.extend_from_slice(&line[..written]);
                    self.partial = Some((line, written));
                }
                self.write(&buf);
            }
            Op::Rotate => {
                if let Some((line, written)) = self.partial.take() {
                    let mut cut = line[..written].to_vec();
                    cut.push(b'\n');
                    self.record(cut);
                }
                // The file at the archive name is overwritten: gone unless the follower
                // holds it open.
                let n = self.inodes.len();
                if n >= 2 && self.held != Some(n - 2) {
                    self.lose_unread(n - 2);
                }
                fs::rename(&self.path, &self.archive).unwrap();
                File::create_new(&self.path).unwrap();
                self.inodes.push(fs::metadata(&self.path).unwrap().ino());
            }
            Op::Truncate { regrow } => {
                self.partial = None;
                let g = self.inodes.len() - 1;
                self.lose_unread(g);
                self.truncated.push(g);
                OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                let mut buf = Vec::new();
                for &pad in regrow {
                    let line = self.next_line(pad);
                    buf.extend_from_slice(&line);
                    self.record(line);
                }
                self.write(&buf);
            }
            Op::Restart => {
                let cursor = follower.cursor();
                let saved = self.held.take().zip(cursor.as_ref()).map(|(g, c)| {
                    assert_eq!(c.ino, self.inodes[g]);
                    c.clone()
                });
                *follower = Follower::new(self.path.clone(), cursor, self.opts.clone());
                // Restarted again before any poll: the saved cursor is passed on unchanged.
                self.resume_from = saved.or(self.resume_from.take());
            }
            Op::Poll { budget } => {
                self.poll(follower, *budget);
            }
        }
    }

    /// Returns whether the follower has more to read.
    fn poll(&mut self, follower: &mut Follower, budget: usize) -> bool {
        if let Some(c) = self.resume_from.take() {
            // Which generation the follower resumes in. A file is the one a cursor or its
            // `before` names by inode *and* first bytes (inodes are reused; a cursor taken on
            // an empty file has no first bytes and matches any file given its inode). The
            // saved file at the path, unless an archive came in that is neither it nor the
            // file recorded before it (then it was rotated away twice and the path's file
            // merely got its inode); else the saved file at the archive name; else such a
            // newer archive, read in full (a gap); else the current file from 0. Everything
            // older than where it resumes and not handed on is gone for it.
            let n = self.inodes.len();
            let names = [(n - 1, &self.path), (n.wrapping_sub(2), &self.archive)];
            let is = |x: usize, ino: u64, fp: Fingerprint, min_len: u64| {
                let (_, name) = names.iter().find(|(g, _)| *g == x).expect("a named file");
                let bytes = fs::read(name).unwrap_or_default();
                let head = bytes.get(..fp.len as usize);
                self.inodes[x] == ino
                    && bytes.len() as u64 >= min_len
                    && head.is_some_and(|h| Fingerprint::of(h) == fp)
            };
            let saved = |x: usize| is(x, c.ino, c.fingerprint, c.offset);
            let (path, archive) = (n - 1, (n >= 2).then(|| n - 2));
            let newer_archive = archive.is_some_and(|a| {
                !saved(a)
                    && match &c.before {
                        Before::Unknown => self.inodes[path] != c.ino,
                        Before::Nothing => true,
                        Before::File {
                            ino, fingerprint, ..
                        } => !is(a, *ino, *fingerprint, 0),
                    }
            });
            let k = match archive {
                _ if !newer_archive && saved(path) => path,
                Some(a) if saved(a) || newer_archive => a,
                _ => path,
            };
            for older in 0..k {
                self.lose_unread(older);
            }
        }
        self.truncated.clear();
        let before = self.out.len();
        let p = follower.poll(&mut self.out, budget).unwrap();
        assert_eq!(p.bytes as usize, self.out.len() - before, "{p:?}");
        // Whatever was handed on so far is exactly a prefix of the readable lines.
        let expected = self.expected();
        assert!(
            expected.starts_with(&self.out),
            "output diverged:\n got: {:?}\nwant: {:?}",
            String::from_utf8_lossy(&self.out),
            String::from_utf8_lossy(&expected)
        );
        let ino = follower.cursor().map(|c| c.ino);
        // Newest first: an inode in use cannot have been given to a newer file.
        self.held = ino.and_then(|ino| self.inodes.iter().rposition(|&i| i == ino));
        p.more
    }
}

fn run(ops: Vec<Op>, read_chunk: usize, max_line: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new(dir.path(), max_line);
    model.opts.read_chunk = read_chunk;
    let mut follower = Follower::new(model.path.clone(), None, model.opts.clone());
    model.poll(&mut follower, usize::MAX);
    assert_eq!(model.held, Some(0));
    for op in &ops {
        model.apply(op, &mut follower);
    }
    // Drain: a budget-limited poll may have left a backlog.
    while model.poll(&mut follower, 1 << 20) {}
    assert_eq!(
        String::from_utf8_lossy(&model.out),
        String::from_utf8_lossy(&model.expected())
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn follower_hands_on_exactly_the_readable_lines(
        ops in prop::collection::vec(op(), 1..60),
        read_chunk in prop_oneof![1usize..32, 32usize..4096],
    ) {
        run(ops, read_chunk, 1 << 20);
    }

    /// Same, with a line limit inside the generated range: over-long lines (also split over
    /// reads, rotations and truncations) are skipped and the stream resynchronizes.
    #[test]
    fn over_long_lines_are_skipped_and_the_rest_still_exact(
        ops in prop::collection::vec(op(), 1..60),
        read_chunk in prop_oneof![1usize..32, 32usize..512],
        max_line in 40usize..130,
    ) {
        run(ops, read_chunk, max_line);
    }
}
