//! Helpers for the success-condition tests on the real desktop (tests/takeover_desktop.rs,
//! tests/takeover_condition.rs): a login site, tabs opened over CDP, waits on what the
//! browser shows. Mounted next to `support` (support/takeover.rs) and `desktop_support`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::storage::GetCookiesParams;
use chromiumoxide::cdp::browser_protocol::target::CreateTargetParams;
use grexal_sidecar::desktop::Desktop;
use tokio::net::TcpStream;

use crate::support::Harness;

/// A login site on 127.0.0.1: `/login`, `/done` (the page after login), `/set-cookie?v=V`
/// sets the `session` cookie to V for 10 minutes, `/set-session?v=V` sets it as a session
/// cookie (no Max-Age: a restarted Chromium has forgotten it).
pub async fn login_site() -> String {
    use axum::extract::Query;
    use axum::response::Html;
    use axum::routing::get;
    use std::collections::HashMap;
    type Params = Query<HashMap<String, String>>;
    let set = |attributes: &'static str| {
        move |Query(q): Params| async move {
            let v = q.get("v").map_or("s3cret", String::as_str);
            (
                [("set-cookie", format!("session={v}; Path=/{attributes}"))],
                Html("<h1>set</h1>"),
            )
        }
    };
    let app = axum::Router::new()
        .route("/login", get(|| async { Html("<h1>login</h1>") }))
        .route("/done", get(|| async { Html("<h1>welcome</h1>") }))
        .route("/set-cookie", get(set("; Max-Age=600")))
        .route("/set-session", get(set("")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Opens `url` in a new tab of the default browser context, through CDP's HTTP endpoint.
pub async fn open_tab(desktop: &Desktop, url: &str) {
    let cdp = desktop.cdp();
    let host = cdp
        .http_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let stream = TcpStream::connect(&host).await.expect("connect CDP http");
    let r = crate::support::http(stream, "PUT", &format!("/json/new?{url}"), &[], None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// Opens `url` in a new page of browser context `context` (one made with
/// `Target.createBrowserContext`, as Playwright's `browser.new_context()` does).
pub async fn open_in_context(
    browser: &chromiumoxide::Browser,
    context: &BrowserContextId,
    url: &str,
) {
    let mut params = CreateTargetParams::new(url);
    params.browser_context_id = Some(context.clone());
    browser.execute(params).await.expect("Target.createTarget");
}

/// Not a readiness wait: three poll periods of the success condition in which a wrong match
/// would have ended the takeover; then it must still be live.
pub async fn still_live_after_three_polls(h: &mut Harness, id: &str, why: &str) {
    tokio::time::sleep(Duration::from_millis(600)).await;
    let state = h.agent("GET", &format!("/v1/takeovers/{id}"), None).await;
    assert_eq!(state.json()["state"], "live", "{why}");
}

/// Waits until the success condition of takeover `id` has finished a poll that started
/// after this call (its `condition polled` trace line, in the log `Harness` captures): what
/// the browser showed before this call, that poll has seen. Under load a poll may take far
/// longer than its 200 ms period (a restarted Chromium's first connection, say).
pub async fn until_polled(h: &Harness, id: &str) {
    let polls = || {
        crate::support::captured_logs()
            .text()
            .lines()
            .filter(|l| l.contains(id) && l.contains("condition polled"))
            .count()
    };
    // The next line may be of a poll already under way: the one after it started later.
    let want = polls() + 2;
    let end = Instant::now() + Duration::from_secs(30);
    let ended = || h.manager.get(id).map_or(true, |t| t.outcome.is_some());
    while polls() < want && !ended() {
        assert!(
            Instant::now() < end,
            "the condition of {id} stopped polling"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Not a fixed wait: a poll of the success condition that started after this call has
/// finished, and the takeover is still live. So whatever the browser showed before this
/// call did not meet the condition (and the baseline, the first poll, is taken).
pub async fn still_live_after_a_poll(h: &Harness, id: &str, why: &str) {
    until_polled(h, id).await;
    let state = h.agent("GET", &format!("/v1/takeovers/{id}"), None).await;
    assert_eq!(state.json()["state"], "live", "{why}");
}

/// Waits until a page target of the browser is at `url` (`/json/list`).
pub async fn until_page_at(desktop: &Desktop, url: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let host = desktop.cdp().http_url;
        let host = host.trim_start_matches("http://").trim_end_matches('/');
        let stream = TcpStream::connect(host).await.expect("connect CDP http");
        let r = crate::support::http(stream, "GET", "/json/list", &[], None).await;
        let pages: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        let at = |p: &serde_json::Value| p["type"] == "page" && p["url"] == url;
        if pages.as_array().is_some_and(|a| a.iter().any(at)) {
            break;
        }
        assert!(Instant::now() < end, "no page reached {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the browser holds the `session` cookie with value `v` (read over CDP) in the
/// default browser context.
pub async fn until_session_cookie(desktop: &Desktop, v: &str) {
    let cdp = crate::desktop_support::cdp(desktop).await;
    until_session_cookie_in(&cdp.browser, None, v).await;
}

/// Waits until `browser` holds the `session` cookie with value `v` in `context` (`None`:
/// the default context).
pub async fn until_session_cookie_in(
    browser: &chromiumoxide::Browser,
    context: Option<&BrowserContextId>,
    v: &str,
) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let params = GetCookiesParams {
            browser_context_id: context.cloned(),
        };
        let cookies = browser
            .execute(params)
            .await
            .expect("Storage.getCookies")
            .result
            .cookies;
        if cookies.iter().any(|c| c.name == "session" && c.value == v) {
            break;
        }
        assert!(Instant::now() < end, "the session cookie never became {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
