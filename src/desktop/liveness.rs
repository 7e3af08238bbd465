//! Whether the running children still answer. A child that hangs (stopped, deadlocked,
//! spinning) never exits, so a supervisor that waits on exits alone leaves the desktop
//! Ready for good, with a dead browser behind `GET /v1/browser` and no event. While the
//! desktop is Ready, each child's readiness probe runs again every few seconds under a
//! timeout: the display's X11 connection setup, the VNC server's RFB handshake up to the
//! security offer (Xvnc's is the display's), Chromium's CDP `/json/version`. A child that
//! fails them for the whole hang timeout is hung, and the supervisor kills it and restarts
//! it as if it had crashed.
//!
//! A false positive costs the user's browser (a restart loses the open pages), so the rule
//! is slow on purpose: at least `MIN_FAILURES` failed probes in a row, the first of them
//! started at least the hang timeout ago. The count is there for the daemon's own stalls:
//! a daemon paused longer than the timeout (a suspended VM, a starved machine) sees its one
//! probe in flight time out with the whole pause in it, and the next probe pass.
//!
//! The probes are the ones readiness runs, which the servers already take at every start:
//! the X11 probe is a client that connects and leaves; the RFB probe hangs up at the
//! security offer, before ClientInit, so it never asks for a shared or exclusive session
//! (which could cut a viewer off); it goes to the server's socket, not through the relay,
//! so no takeover counts it as a viewer; and `/json/version` opens no CDP session.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, trace};

use super::xauth::XAuthority;
use super::{probe, DesktopError};
use crate::relay::VncTarget;

/// The longest pause between two rounds of probes, and the longest one probe may take.
const MAX_PAUSE: Duration = Duration::from_secs(5);
const MAX_PROBE: Duration = Duration::from_secs(5);
/// Failed probes in a row, at least, before a child is hung (see the module's comment).
const MIN_FAILURES: u32 = 3;

/// One protocol check of a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// An X11 connection setup on display `:N`.
    X11(u32),
    /// The RFB handshake up to the security offer.
    Rfb(VncTarget),
    /// `GET /json/version` on the CDP port.
    Cdp(u16),
}

/// A running child and the probes it must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Watched {
    pub(crate) child: &'static str,
    pub(crate) pid: u32,
    pub(crate) probes: Vec<Probe>,
}

/// A child found hung.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hung {
    pub(crate) child: &'static str,
    pub(crate) pid: u32,
    /// Failed probes in a row, and the time since the first of them started.
    pub(crate) failures: u32,
    pub(crate) silent: Duration,
    /// Why the last one failed.
    pub(crate) last: String,
}

impl Hung {
    /// The restart's reason, as `browser_restarted` and `desktop_failed` carry it.
    pub(crate) fn reason(&self) -> String {
        format!(
            "{} hung: it failed {} probes in a row over {}s (the last: {})",
            self.child,
            self.failures,
            self.silent.as_secs(),
            self.last
        )
    }
}

/// How the probes are paced for a hang timeout: every 5 s, 5 s each, by default (30 s);
/// a shorter timeout gets quicker probes so that it still spans several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timing {
    /// From the end of one round of probes to the start of the next.
    pause: Duration,
    /// How long one child's probes may take.
    probe: Duration,
}

impl Timing {
    fn for_hang(hang: Duration) -> Timing {
        Timing {
            pause: (hang / 3).min(MAX_PAUSE),
            probe: (hang / 2).min(MAX_PROBE),
        }
    }
}

/// One child's run of failed probes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Streak {
    /// When the first failed probe of the run started.
    since: Option<Instant>,
    failures: u32,
}

impl Streak {
    /// Records a probe that started at `started` and ended at `now`; returns whether the
    /// child is now hung.
    fn record(&mut self, answered: bool, started: Instant, now: Instant, hang: Duration) -> bool {
        if answered {
            *self = Streak::default();
            return false;
        }
        let since = *self.since.get_or_insert(started);
        self.failures += 1;
        self.failures >= MIN_FAILURES && now.duration_since(since) >= hang
    }
}

/// Runs `watched`'s probes until one child is hung; never returns if none hangs. Dropped
/// (a child exited, the desktop stops), it leaves nothing behind: a probe's connection is
/// closed with it.
pub(crate) async fn until_hung(watched: &[Watched], auth: &XAuthority, hang: Duration) -> Hung {
    let timing = Timing::for_hang(hang);
    let mut streaks = vec![Streak::default(); watched.len()];
    loop {
        tokio::time::sleep(timing.pause).await;
        let started = Instant::now();
        let answers =
            futures_util::future::join_all(watched.iter().map(|w| answers(w, auth, timing.probe)))
                .await;
        let now = Instant::now();
        // In start order: a hung display also stalls its clients' probes, and it is the
        // display that must be named and restarted (which restarts them too).
        for ((w, streak), answer) in watched.iter().zip(&mut streaks).zip(answers) {
            let failures = streak.failures;
            match &answer {
                Ok(()) if failures > 1 => {
                    info!(
                        child = w.child,
                        pid = w.pid,
                        failures,
                        "child answers its probes again"
                    );
                }
                Ok(()) => trace!(child = w.child, pid = w.pid, "child answered its probe"),
                Err(error) => {
                    debug!(child = w.child, pid = w.pid, %error, failures = failures + 1, "child did not answer its probe");
                }
            }
            if streak.record(answer.is_ok(), started, now, hang) {
                return Hung {
                    child: w.child,
                    pid: w.pid,
                    failures: streak.failures,
                    silent: streak.since.map_or(hang, |since| now.duration_since(since)),
                    last: answer.err().map(|e| e.to_string()).unwrap_or_default(),
                };
            }
        }
    }
}

/// Why a child failed its probe.
#[derive(Debug)]
enum NoAnswer {
    /// Nothing within the probe's time: what a hung child does.
    Silent(Duration),
    /// A refused connection, a hang-up or a wrong answer.
    Failed(DesktopError),
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoAnswer::Silent(timeout) => write!(f, "no answer within {}ms", timeout.as_millis()),
            // One line with the cause: "probing vnc failed: Connection refused".
            NoAnswer::Failed(error) => match std::error::Error::source(error) {
                Some(source) => write!(f, "{error}: {source}"),
                None => write!(f, "{error}"),
            },
        }
    }
}

/// Runs one child's probes in order, all within `timeout`.
async fn answers(watched: &Watched, auth: &XAuthority, timeout: Duration) -> Result<(), NoAnswer> {
    let all = async {
        for probe in &watched.probes {
            match probe {
                Probe::X11(display) => probe::x11(*display, auth).await.map(drop)?,
                Probe::Rfb(target) => probe::rfb(target).await.map(drop)?,
                Probe::Cdp(port) => probe::cdp_version(*port).await.map(drop)?,
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, all).await {
        Ok(answer) => answer.map_err(NoAnswer::Failed),
        Err(_) => Err(NoAnswer::Silent(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_paced_by_the_hang_timeout() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases = [
            // The default: every 5 s, 5 s each.
            (s(30), s(5), s(5)),
            (s(3600), s(5), s(5)),
            (s(15), s(5), s(5)),
            // The shortest the flag takes: still at least three probes in the timeout.
            (s(5), ms(1666), ms(2500)),
            (s(9), s(3), ms(4500)),
        ];
        for (hang, pause, probe) in cases {
            let got = Timing::for_hang(hang);
            assert!(
                got.pause.abs_diff(pause) < ms(1) && got.probe == probe,
                "{hang:?}: {got:?}"
            );
        }
    }

    #[test]
    fn hung_needs_enough_failures_over_the_whole_timeout() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let hang = Duration::from_secs(30);
        // (answered, started, ended, hung after it)
        type Step = (bool, u64, u64, bool);
        let cases: [(&str, &[Step]); 5] = [
            (
                "probes every 10 s that time out after 5: hung at the fourth",
                &[
                    (false, 0, 5, false),
                    (false, 10, 15, false),
                    (false, 20, 25, false),
                    (false, 30, 35, true),
                ],
            ),
            (
                "an answer starts the count again",
                &[
                    (false, 0, 5, false),
                    (false, 10, 15, false),
                    (false, 20, 25, false),
                    (true, 30, 31, false),
                    (false, 40, 45, false),
                    (false, 50, 55, false),
                    (false, 60, 65, false),
                    (false, 70, 75, true),
                ],
            ),
            (
                "one probe with a whole pause of the daemon in it is not a hang",
                &[(false, 0, 100, false), (true, 105, 106, false)],
            ),
            (
                "two failures over the timeout are not enough",
                &[(false, 0, 40, false), (false, 45, 80, false)],
            ),
            (
                "three quick failures are not enough before the timeout",
                &[
                    (false, 0, 1, false),
                    (false, 2, 3, false),
                    (false, 4, 5, false),
                    (false, 29, 30, true),
                ],
            ),
        ];
        for (name, steps) in cases {
            let mut streak = Streak::default();
            for (i, &(answered, started, ended, hung)) in steps.iter().enumerate() {
                assert_eq!(
                    streak.record(answered, at(started), at(ended), hang),
                    hung,
                    "{name}: step {i}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_failed_probe_says_why_in_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = XAuthority::create(dir.path(), None).expect("xauthority");
        let gone = Watched {
            child: "vnc",
            pid: 2,
            probes: vec![Probe::Rfb(VncTarget::Unix(dir.path().join("gone.sock")))],
        };
        let error = answers(&gone, &auth, Duration::from_secs(5))
            .await
            .expect_err("nothing listens");
        assert_eq!(
            error.to_string(),
            "probing vnc failed: No such file or directory (os error 2)"
        );
    }

    /// A VNC "server" whose socket takes connections (the kernel queues them) but never
    /// answers, as a stopped process's does; and one that answers.
    #[tokio::test(start_paused = true)]
    async fn a_server_that_stops_answering_is_hung_after_the_timeout_and_not_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let silent = dir.path().join("silent.sock");
        let _silent = std::os::unix::net::UnixListener::bind(&silent).expect("bind");
        let healthy = dir.path().join("healthy.sock");
        let listener = tokio::net::UnixListener::bind(&healthy).expect("bind");
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut conn, _)) = listener.accept().await {
                // The banner, then one security type (None); the probe hangs up after it.
                tokio::spawn(async move {
                    let _ = conn.write_all(b"RFB 003.008\n\x01\x01").await;
                    let mut sink = [0u8; 64];
                    while conn.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        let auth = XAuthority::create(dir.path(), None).expect("xauthority");
        let watched = [
            Watched {
                child: "display",
                pid: 1,
                probes: vec![Probe::Rfb(VncTarget::Unix(healthy))],
            },
            Watched {
                child: "vnc",
                pid: 2,
                probes: vec![Probe::Rfb(VncTarget::Unix(silent))],
            },
        ];
        let started = Instant::now();
        let hung = until_hung(&watched, &auth, Duration::from_secs(30)).await;
        let took = started.elapsed();
        server.abort();
        // Paused time makes it exact: a 5 s pause, then probes that time out after 5 s,
        // started at 5, 15, 25 and 35 s; the fourth ends 35 s after the first started.
        assert_eq!((hung.child, hung.pid), ("vnc", 2), "{hung:?}");
        assert_eq!(took, Duration::from_secs(40));
        assert_eq!(
            hung.reason(),
            "vnc hung: it failed 4 probes in a row over 35s (the last: no answer within 5000ms)"
        );
    }
}
