//! The orphan reaper with real processes: orphans are reaped, owned children are not.
//!
//! `spawn_orphan_reaper` makes this test process a child subreaper (it is not PID 1), so
//! orphaned grandchildren re-parent to it exactly as they would to a PID-1 daemon.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grexal_sidecar::reaper;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// State and parent of `pid`, or `None` once it is gone (reaped).
fn state_and_parent(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_owned();
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

async fn owned_sh(script: &str) -> (u32, std::process::ExitStatus, String) {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::piped());
    let mut child = reaper::owned().spawn(&mut command).expect("spawn");
    let pid = child.id().expect("pid");
    assert!(reaper::owned().contains(pid));
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out).await.expect("read stdout");
    }
    let status = child
        .wait()
        .await
        .expect("an owned child's status must reach its owner");
    reaper::owned().release(pid);
    assert!(!reaper::owned().contains(pid));
    (pid, status, out)
}

#[tokio::test]
async fn orphaned_grandchild_is_reaped() {
    assert!(!reaper::is_pid1());
    let stop = CancellationToken::new();
    let task = reaper::spawn_orphan_reaper(stop.clone());

    // The shell leaves a background sleep behind and exits: the sleep is orphaned.
    // (`>/dev/null` so the orphan does not hold our stdout pipe open.)
    let (_, status, out) = owned_sh("sleep 2 >/dev/null & echo $!").await;
    assert!(status.success());
    let orphan: u32 = out.trim().parse().expect("orphan pid");

    // Re-parented to us, since we are a subreaper now.
    let (state, ppid) = state_and_parent(orphan).expect("the orphan is still sleeping");
    assert_eq!(
        ppid,
        std::process::id(),
        "orphan in state {state} not re-parented to us"
    );

    // When it exits it becomes our zombie; the reaper must make it disappear. Without
    // the reaper it would stay a zombie for as long as this process lives.
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some((state, _)) = state_and_parent(orphan) {
        assert!(
            Instant::now() < deadline,
            "orphan {orphan} still present in state {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("reaper stops")
        .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_statuses_survive_concurrent_reaping() {
    let stop = CancellationToken::new();
    let task = reaper::spawn_orphan_reaper(stop.clone());
    // A second, eager reaper hammering passes, to widen every race window.
    let done = Arc::new(AtomicBool::new(false));
    let hammer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut reaped = 0;
            while !done.load(Ordering::Relaxed) {
                reaped += reaper::reap_orphans();
                // Leave the lock free now and then, or spawns starve.
                std::thread::sleep(Duration::from_micros(200));
            }
            reaped
        })
    };

    for round in 0..100u32 {
        // Four owned children at once, each also leaving an orphan behind so the
        // reapers have real work at the same moments the owners wait.
        let waits = (0..4u32).map(|k| {
            let code = (round * 4 + k) % 256;
            tokio::spawn(async move {
                let (_, status, _) = owned_sh(&format!("(true &) ; exit {code}")).await;
                (code, status)
            })
        });
        for wait in waits.collect::<Vec<_>>() {
            let (code, status) = wait.await.expect("join");
            assert_eq!(
                status.code(),
                Some(code as i32),
                "round {round}: {status:?}"
            );
        }
    }

    done.store(true, Ordering::Relaxed);
    let reaped = hammer.join().expect("hammer");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("reaper stops")
        .expect("join");
    // The orphans went somewhere: to the reapers (this process is a subreaper).
    eprintln!("hammer reaped {reaped} orphans");
}
