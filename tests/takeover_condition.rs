//! The success condition and bringing the browser to the front against the real desktop
//! (Xvnc + Chromium; skipped only when those are missing and `CI` is unset): a hung
//! Chromium refused in bounded time, a login in a browser context of its own, a pre-login
//! cookie handed out again after a restart, and a pattern and cookie domain written
//! otherwise than Chromium reports them.

#[path = "support/condition_site.rs"]
mod condition_site;
#[path = "support/desktop.rs"]
mod desktop_support;
#[path = "support/takeover.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::target::CreateBrowserContextParams;
use condition_site::{
    login_site, open_in_context, open_tab, still_live_after_a_poll, until_session_cookie,
    until_session_cookie_in,
};
use grexal_sidecar::desktop::{Desktop, DesktopStatus};
use grexal_sidecar::platform::events::EventBus;
use grexal_sidecar::takeover::{Browser, TakeoverLimits, BRING_TO_FRONT_TIMEOUT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{eventually, request_body, start, Harness};
use tokio::sync::broadcast::error::TryRecvError;
use tokio_util::sync::CancellationToken;

/// The cookie condition on the login site's `session` cookie.
const SESSION_COOKIE: &str = r#"{"connection_id":"github","reason":"r","timeout_seconds":120,"success":{"cookie":{"name":"session","domain":"127.0.0.1"}}}"#;

struct Stack {
    _dir: tempfile::TempDir,
    stop: CancellationToken,
    desktop: Arc<Desktop>,
    h: Harness,
}

async fn boot() -> Stack {
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = CancellationToken::new();
    let desktop = Arc::new(
        Desktop::start(
            desktop_support::config(dir.path()),
            EventBus::new(),
            stop.clone(),
        )
        .await
        .expect("desktop starts"),
    );
    let h = Harness::start(
        desktop.clone() as Arc<dyn Browser>,
        TakeoverLimits::default(),
    )
    .await;
    Stack {
        _dir: dir,
        stop,
        desktop,
        h,
    }
}

impl Stack {
    async fn shutdown(self) {
        drop(self.h);
        self.stop.cancel();
        if let Ok(desktop) = Arc::try_unwrap(self.desktop) {
            desktop.shutdown().await;
        }
    }
}

/// Asserts the takeover ended completed by the condition within `within_s`.
async fn completed_by_condition(h: &Harness, id: &str, within_s: u64, why: &str) {
    let waited = h.wait(id, within_s).await;
    let body = waited.json();
    if (body["outcome"].as_str(), body["by"].as_str()) != (Some("completed"), Some("condition")) {
        // The condition's own log of this takeover, to tell a missed login from a late one.
        let logs = support::captured_logs().text();
        let ours: Vec<&str> = logs.lines().filter(|l| l.contains(id)).collect();
        panic!("{why}: {body}\n{}", ours.join("\n"));
    }
}

/// Sends SIGCONT to a stopped process when dropped, so a failing assertion cannot leave
/// Chromium stopped (and the desktop's shutdown waiting on it).
struct ContinueOnDrop(Pid);

impl Drop for ContinueOnDrop {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

fn skip_desktop() -> bool {
    desktop_support::skip(desktop_support::XVNC_BINARIES)
}

/// A stopped Chromium still has its CDP socket accept connections (the kernel does that)
/// and never answers: `POST /v1/takeovers` answers `browser_unavailable` in bounded time,
/// with no takeover live and no event sent, and a takeover works once Chromium runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_browser_is_refused_in_bounded_time() {
    if skip_desktop() {
        return;
    }
    let mut s = boot().await;
    let chromium = Pid::from_raw(s.desktop.pids().chromium as i32);
    kill(chromium, Signal::SIGSTOP).expect("SIGSTOP chromium");
    let stopped = ContinueOnDrop(chromium);
    let started = Instant::now();
    let answered = tokio::time::timeout(
        BRING_TO_FRONT_TIMEOUT + Duration::from_secs(5),
        s.h.agent("POST", "/v1/takeovers", Some(&request_body(60))),
    )
    .await;
    let elapsed = started.elapsed();
    drop(stopped);
    let r = answered.expect("POST /v1/takeovers answered while Chromium was stopped");
    assert_eq!(
        (r.status, r.code()),
        (503, "browser_unavailable".to_owned()),
        "after {elapsed:?}"
    );
    assert!(s.h.manager.list().is_empty(), "{:?}", s.h.manager.list());
    assert!(
        matches!(s.h.events.try_recv(), Err(TryRecvError::Empty)),
        "an event was sent for a takeover that was refused"
    );
    // Nothing was left half made: the next request, Chromium running again, succeeds.
    assert_eq!(*s.desktop.status().borrow(), DesktopStatus::Ready);
    let (id, _, _) = start(&mut s.h, &request_body(60)).await;
    assert_eq!(s.h.manager.list().len(), 1, "{id}");
    s.shutdown().await;
}

/// Playwright's `browser.new_context()` over `connect_over_cdp` logs in in a browser
/// context of its own: the cookie condition sees that context's cookies too, with the same
/// baseline rule (the pre-login value there at the start is no login; the login's is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_in_another_browser_context_meets_the_cookie_condition() {
    if skip_desktop() {
        return;
    }
    let mut s = boot().await;
    let site = login_site().await;
    let cdp = desktop_support::cdp(&s.desktop).await;
    let context = cdp
        .browser
        .execute(CreateBrowserContextParams::default())
        .await
        .expect("Target.createBrowserContext")
        .result
        .browser_context_id;
    let anonymous = format!("{site}/set-cookie?v=anonymous");
    open_in_context(&cdp.browser, &context, &anonymous).await;
    until_session_cookie_in(&cdp.browser, Some(&context), "anonymous").await;

    let (id, _, _) = start(&mut s.h, SESSION_COOKIE).await;
    still_live_after_a_poll(
        &s.h,
        &id,
        "the context's cookie that was there at the start must not complete it",
    )
    .await;
    let login = format!("{site}/set-cookie?v=user-42");
    open_in_context(&cdp.browser, &context, &login).await;
    completed_by_condition(&s.h, &id, 30, "the login in the browser context").await;
    drop(cdp);
    s.shutdown().await;
}

/// A pre-login *session* cookie is in the baseline; Chromium restarts mid-takeover (the
/// cookie is gone) and the reloaded login page hands out a fresh pre-login value. That is
/// no login; the login after it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_pre_login_cookie_after_a_restart_is_not_a_login() {
    if skip_desktop() {
        return;
    }
    let mut s = boot().await;
    let site = login_site().await;
    open_tab(&s.desktop, &format!("{site}/set-session?v=anon-1")).await;
    until_session_cookie(&s.desktop, "anon-1").await;
    let (id, _, _) = start(&mut s.h, SESSION_COOKIE).await;
    still_live_after_a_poll(&s.h, &id, "the pre-login cookie of the start").await;

    let before = s.desktop.pids().chromium;
    desktop_support::sigkill(before);
    let status = s.desktop.status();
    let desktop = s.desktop.clone();
    eventually("chromium restarted", Duration::from_secs(60), || {
        desktop.pids().chromium != before && *status.borrow() == DesktopStatus::Ready
    })
    .await;
    open_tab(&s.desktop, &format!("{site}/set-session?v=anon-2")).await;
    until_session_cookie(&s.desktop, "anon-2").await;
    still_live_after_a_poll(
        &s.h,
        &id,
        "a fresh pre-login cookie after a restart must not complete it",
    )
    .await;

    open_tab(&s.desktop, &format!("{site}/set-session?v=user-42")).await;
    completed_by_condition(&s.h, &id, 30, "the login after the restart").await;
    drop(desktop);
    s.shutdown().await;
}

/// A pattern's scheme and host and a cookie's domain written in capitals (and the domain
/// with dots around it): Chromium reports them lowercase, and the condition still meets
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_and_domain_written_otherwise_meet_what_chromium_reports() {
    if skip_desktop() {
        return;
    }
    let mut s = boot().await;
    let site = login_site().await;
    let port = site.rsplit(':').next().expect("port");
    let body = format!(
        r#"{{"connection_id":"github","reason":"r","timeout_seconds":120,"success":{{"url_pattern":"HTTP://LocalHost:{port}/done*","cookie":{{"name":"session","domain":".LOCALHOST."}}}}}}"#
    );
    let (id, _, _) = start(&mut s.h, &body).await;
    // The baseline is taken by the first poll: the login comes after it.
    still_live_after_a_poll(&s.h, &id, "nothing happened yet").await;
    open_tab(
        &s.desktop,
        &format!("http://localhost:{port}/set-cookie?v=user-42"),
    )
    .await;
    open_tab(&s.desktop, &format!("http://localhost:{port}/done")).await;
    completed_by_condition(&s.h, &id, 30, "the pattern and domain in capitals").await;
    s.shutdown().await;
}
