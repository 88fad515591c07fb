//! Idle cost of the tailer. Its own test binary: CPU time is measured for the whole process.

use std::fs::File;
use std::time::Duration;

use pia_split_tunnel_exporter::tail::{FollowOptions, Follower, Tailer};

/// Idle costs (almost) no CPU: no busy loop while waiting for data.
#[tokio::test(flavor = "current_thread")]
async fn idle_tailer_uses_almost_no_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transparent_proxy.log");
    File::create(&path).unwrap();
    let mut tailer = Tailer::new(Follower::new(path, None, FollowOptions::default()));
    let mut buf = Vec::new();
    tailer.next(&mut buf).await.unwrap();
    let before = cpu_time();
    let r = tokio::time::timeout(Duration::from_secs(2), tailer.next(&mut buf)).await;
    assert!(r.is_err());
    let used = cpu_time() - before;
    assert!(
        used < Duration::from_millis(100),
        "idle for 2 s used {used:?} of CPU"
    );
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
