//! The async tailer against a concurrent writer that rotates exactly like the proxy.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use pia_split_tunnel_exporter::tail::{FileState, FollowOptions, Follower, Tailer};

const ROTATE_AT: u64 = 512_000;

fn line(seq: u64) -> Vec<u8> {
    // Realistic length (~110 bytes), CRLF like the proxy.
    format!(
        "{seq:09} 2024-05-01T12:00:00.000Z [info] flow id={seq} app=com.example.App bypass=true\r\n"
    )
    .into_bytes()
}

fn parse_seq(l: &[u8]) -> u64 {
    assert!(
        l.ends_with(b"\r\n"),
        "torn line {:?}",
        String::from_utf8_lossy(l)
    );
    let seq: u64 = std::str::from_utf8(&l[..9]).unwrap().parse().unwrap();
    assert_eq!(l, line(seq).as_slice(), "damaged line");
    seq
}

/// Writes lines `1..=count`, rotating like the proxy (rename over `.1`, create a new file)
/// when the next line would take the file past 512,000 bytes, and `every` lines if given.
/// With `reader`, waits before a rotation that would overwrite an archive the reader has not
/// finished: overwriting it destroys lines no follower could read. With `pace`, sleeps that
/// long after every 10 lines. Returns the last sequence number of each file, oldest first,
/// and at how many rotations the writer had to wait for the reader.
fn writer(
    path: PathBuf,
    count: u64,
    every: Option<u64>,
    reader: Option<Arc<AtomicU64>>,
    pace: Option<Duration>,
) -> thread::JoinHandle<(Vec<u64>, u64)> {
    thread::spawn(move || {
        let archive = path.with_extension("log.1");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let (mut size, mut in_file) = (0u64, 0u64);
        let mut file_ends = Vec::new();
        let mut waits = 0;
        for seq in 1..=count {
            let l = line(seq);
            let full = size + l.len() as u64 > ROTATE_AT || every.is_some_and(|n| in_file == n);
            if full {
                if let (Some(r), Some(&archived_up_to)) = (&reader, file_ends.last()) {
                    if r.load(Ordering::Acquire) < archived_up_to {
                        waits += 1;
                    }
                    while r.load(Ordering::Acquire) < archived_up_to {
                        thread::sleep(Duration::from_micros(200));
                    }
                }
                file_ends.push(seq - 1);
                drop(f);
                fs::rename(&path, &archive).unwrap();
                f = File::create_new(&path).unwrap();
                (size, in_file) = (0, 0);
            }
            f.write_all(&l).unwrap();
            size += l.len() as u64;
            in_file += 1;
            if let Some(d) = pace.filter(|_| seq % 10 == 0) {
                thread::sleep(d);
            }
        }
        file_ends.push(count);
        (file_ends, waits)
    })
}

/// Reads until `last` is seen (or the deadline); returns every sequence number in order.
async fn read_until(
    tailer: &mut Tailer,
    last: u64,
    seen: &AtomicU64,
    deadline: Duration,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut buf = Vec::new();
    let fut = async {
        while seqs.last() != Some(&last) {
            buf.clear();
            tailer.next(&mut buf).await.unwrap();
            for l in buf.split_inclusive(|&b| b == b'\n') {
                seqs.push(parse_seq(l));
            }
            if let Some(&s) = seqs.last() {
                seen.store(s, Ordering::Release);
            }
        }
    };
    tokio::time::timeout(deadline, fut)
        .await
        .expect("tailer did not deliver the last line in time");
    seqs
}

fn tailer_for(path: &Path) -> Tailer {
    Tailer::new(Follower::new(
        path.to_path_buf(),
        None,
        FollowOptions::default(),
    ))
}

/// A tailer that already has the (new, empty) log open, as the agent would before the writer
/// rotates: a file rotated away before the tailer ever opened it is not its history.
async fn open_tailer(path: &Path) -> Tailer {
    File::create(path).unwrap();
    let mut tailer = tailer_for(path);
    let p = tailer.next(&mut Vec::new()).await.unwrap();
    assert_eq!((p.file, p.bytes), (FileState::Present, 0));
    assert!(tailer.cursor().is_some());
    tailer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_continuous_writing_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transparent_proxy.log");
    let count = 200_000;
    let seen = Arc::new(AtomicU64::new(0));
    let mut tailer = open_tailer(&path).await;
    let started = Instant::now();
    let w = writer(path.clone(), count, None, Some(seen.clone()), None);
    let seqs = read_until(&mut tailer, count, &seen, Duration::from_secs(300)).await;
    let (file_ends, waits) = w.join().unwrap();
    eprintln!(
        "{count} lines, {} rotations ({waits} waited for the reader), {:?}",
        file_ends.len() - 1,
        started.elapsed()
    );
    assert!(file_ends.len() > 30, "expected many rotations");
    assert_eq!(seqs.len() as u64, count);
    assert!(
        seqs.iter().copied().eq(1..=count),
        "lines out of order or duplicated"
    );
}

/// 20 rotations of 50 lines with no pause and no regard for the reader: files overwritten at
/// the archive name before the reader got to them are legitimately lost, but only whole
/// files, and every surviving line comes exactly once, in order, without hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_rotations_loses_only_destroyed_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transparent_proxy.log");
    let seen = Arc::new(AtomicU64::new(0));
    let mut tailer = open_tailer(&path).await;
    let count = 21 * 50;
    let (file_ends, _) = writer(path.clone(), count, Some(50), None, None)
        .join()
        .unwrap();
    assert_eq!(file_ends.len(), 21);
    let seqs = read_until(&mut tailer, count, &seen, Duration::from_secs(30)).await;
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "order or duplicates");
    // Each file is all or nothing; the first (held open), the archive and the current
    // file are complete.
    let mut start = 1;
    for (i, &end) in file_ends.iter().enumerate() {
        let got = seqs.iter().filter(|&&s| s >= start && s <= end).count() as u64;
        let whole = end - start + 1;
        assert!(
            got == 0 || got == whole,
            "file {i} partly read: {got}/{whole}"
        );
        if i == 0 || i + 2 >= file_ends.len() {
            assert_eq!(got, whole, "file {i} must be read");
        }
        start = end + 1;
    }
}

/// The same burst, but the writer does not overwrite an archive the reader has not finished:
/// then nothing at all may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_rotations_with_readable_archives_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transparent_proxy.log");
    let seen = Arc::new(AtomicU64::new(0));
    let mut tailer = open_tailer(&path).await;
    let count = 21 * 50;
    let w = writer(path.clone(), count, Some(50), Some(seen.clone()), None);
    let seqs = read_until(&mut tailer, count, &seen, Duration::from_secs(30)).await;
    w.join().unwrap();
    assert!(seqs.iter().copied().eq(1..=count));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_parent_folder_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("logs");
    let path = sub.join("transparent_proxy.log");
    let mut tailer = tailer_for(&path);
    let mut buf = Vec::new();
    let p = tailer.next(&mut buf).await.unwrap();
    assert_eq!(p.file, FileState::Missing);
    assert!(!tailer.is_watching());
    // Nothing to report while the folder is missing: next() keeps waiting.
    let waited = tokio::time::timeout(Duration::from_millis(700), tailer.next(&mut buf)).await;
    assert!(
        waited.is_err(),
        "returned {waited:?} with nothing to report"
    );
    fs::create_dir(&sub).unwrap();
    // The folder exists now; the file comes later still.
    tokio::time::sleep(Duration::from_millis(600)).await;
    fs::write(&path, b"hello\r\n").unwrap();
    let p = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let p = tailer.next(&mut buf).await.unwrap();
            if p.bytes > 0 {
                return p;
            }
        }
    })
    .await
    .expect("line from the late file");
    assert_eq!(p.file, FileState::Present);
    assert_eq!(buf, b"hello\r\n");
    assert!(tailer.is_watching());
}

/// Folder events, not the backstop timer, drive reads while the watch is up: a line written
/// right after the previous one was received arrives well before the 1 s backstop tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_arrive_on_folder_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transparent_proxy.log");
    File::create(&path).unwrap();
    let mut tailer = tailer_for(&path);
    let mut buf = Vec::new();
    tailer.next(&mut buf).await.unwrap();
    assert!(tailer.is_watching());
    let mut total = Duration::ZERO;
    for seq in 1..=5 {
        let t = Instant::now();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&line(seq))
            .unwrap();
        buf.clear();
        tokio::time::timeout(Duration::from_secs(5), tailer.next(&mut buf))
            .await
            .unwrap()
            .unwrap();
        total += t.elapsed();
        assert_eq!(parse_seq(&buf), seq);
    }
    assert!(
        total / 5 < Duration::from_millis(400),
        "mean latency {:?}",
        total / 5
    );
}

/// Cancel-safety: `next` dropped by `select!` many times over loses and duplicates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_is_cancel_safe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transparent_proxy.log");
    let seen = Arc::new(AtomicU64::new(0));
    let mut tailer = open_tailer(&path).await.with_batch_bytes(4096);
    let count = 20_000;
    let pace = Some(Duration::from_micros(100));
    let w = writer(path.clone(), count, Some(3_000), Some(seen.clone()), pace);
    let mut seqs = Vec::new();
    let mut buf = Vec::new();
    let mut cancelled = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0u32;
    while seqs.last() != Some(&count) {
        assert!(Instant::now() < deadline, "stalled at {:?}", seqs.last());
        buf.clear();
        round += 1;
        // Cancelled as soon as it has to wait (the only place it can be), or a bit later.
        let cancel = async {
            if round.is_multiple_of(2) {
                tokio::task::yield_now().await
            } else {
                tokio::time::sleep(Duration::from_micros(200)).await
            }
        };
        tokio::select! {
            biased;
            r = tailer.next(&mut buf) => { r.unwrap(); }
            _ = cancel => { cancelled += 1; }
        }
        for l in buf.split_inclusive(|&b| b == b'\n') {
            seqs.push(parse_seq(l));
        }
        if let Some(&s) = seqs.last() {
            seen.store(s, Ordering::Release);
        }
    }
    w.join().unwrap();
    assert!(seqs.iter().copied().eq(1..=count));
    assert!(cancelled > 100, "only cancelled {cancelled} times");
}
