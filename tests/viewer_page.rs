//! The viewer page's own behaviour in the system Chromium (driven by `tests/e2e/viewer.mjs`
//! against the fake takeover side and a real Xvnc, as in `tests/viewer.rs`): a start that
//! fails for a moment, reloads (after a failure and after the end), an ending told by the
//! connection just closing, two tabs once the page thinks time is up, a phone's layout, a
//! reason too long for two lines, and a keyboard leaving the screen.
//! Screenshots land in `target/e2e-artifacts/`.

mod support;
#[path = "support/viewer_desk.rs"]
mod viewer_desk;
#[path = "support/viewer.rs"]
mod viewer_support;

use std::sync::atomic::Ordering;

use serde_json::{json, Value};
use viewer_desk::*;
use viewer_support::*;

/// Where the page keeps the token for this tab (sessionStorage), for the fake's takeover.
fn token_key(fake: &Fake) -> String {
    format!("grexal.takeover:/takeover/{}", fake.id)
}

fn control_url(base: &str, fake: &Fake) -> String {
    format!("{base}/takeover/{}#token={}", fake.id, fake.control_token)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The first `GET session` is lost on the way (a reset connection) and the next answered by
/// a proxy's HTML 502: the page keeps trying with its backoff and goes live, never showing
/// an error, and the token survives it: a reload goes live again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_fails_at_first_is_asked_again_and_the_link_kept() {
    let Some(desk) = desk("Please sign in to Example Bank", &[]) else {
        return;
    };
    let fake = Fake::new_with(&desk.x.socket, |f| {
        f.session_failures = 1.into();
    });
    let base = fake.serve().await;
    let actions = json!([
        {"type": "reload"},
        {"type": "wait_pixels"},
        {"type": "layout", "name": "reloaded"},
        {"type": "complete"},
        {"type": "wait_state", "state": "ended"},
    ]);
    let h = run_harness_with(
        &desk.home,
        &control_url(&base, &fake),
        &shot("blip-then-reload"),
        Some(actions),
        "live",
        &["--abort", "**/session@1"],
    )
    .await;
    eprintln!("blip: {}", h.result);
    assert_ok(&h, "blip");
    // The first document went live (the harness waited for its pixels) and was reloaded;
    // the second went live too and then ended.
    assert_eq!(states(&h), ["connecting", "live", "ended"], "{}", h.result);
    // The reset one never reached the fake: the 502, then the first document's live answer
    // and the reloaded one's.
    assert!(fake.calls("session") >= 3, "{}", h.result);
    assert_eq!(fake.calls("complete"), 1);
    assert!(
        strings(&h.result["layouts"]["reloaded"]["stored_keys"]).contains(&token_key(&fake)),
        "{}",
        h.result
    );
    drop(desk);
}

/// noVNC's module cannot be fetched: the page says so and to reload, and the reload (the
/// module reachable again) goes live: the token was kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_failing_to_load_is_told_and_a_reload_goes_live() {
    let Some(desk) = desk("Please sign in to Example Bank", &[]) else {
        return;
    };
    let fake = Fake::new(&desk.x.socket);
    let base = fake.serve().await;
    let actions = json!([
        {"type": "screenshot", "path": shot("novnc-failed")},
        {"type": "unroute"},
        {"type": "reload"},
        {"type": "wait_pixels"},
    ]);
    let h = run_harness_with(
        &desk.home,
        &control_url(&base, &fake),
        &shot("novnc-failed-reloaded"),
        Some(actions),
        "error",
        &["--abort", "**/novnc/core/rfb.js"],
    )
    .await;
    eprintln!("noVNC failed: {}", h.result);
    assert_ok(&h, "noVNC failed");
    assert_eq!(states(&h), ["connecting", "live"], "{}", h.result);
    assert_eq!(h.result["state"], "live");
}

/// Once the takeover has ended, a reload of the tab shows how it ended, not "This link is
/// not valid": the token is forgotten (it is no use any more), the outcome kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_after_the_end_shows_how_it_ended() {
    let Some(desk) = desk("Please sign in to Example Bank", &[]) else {
        return;
    };
    let fake = Fake::new(&desk.x.socket);
    let base = fake.serve().await;
    let actions = json!([
        {"type": "complete"},
        {"type": "wait_state", "state": "ended"},
        {"type": "layout", "name": "ended"},
        {"type": "reload"},
        {"type": "wait_state", "state": "ended", "timeout_ms": 10000},
    ]);
    let h = run_harness_with(
        &desk.home,
        &control_url(&base, &fake),
        &shot("ended-reloaded"),
        Some(actions),
        "live",
        &[],
    )
    .await;
    eprintln!("ended, reloaded: {}", h.result);
    assert_ok(&h, "ended, reloaded");
    assert_eq!(
        (h.result["state"].as_str(), h.result["outcome"].as_str()),
        (Some("ended"), Some("completed"))
    );
    // Straight to the ending, from what the tab kept: the sandbox is not even asked.
    assert_eq!(states(&h), ["ended"], "{}", h.result);
    assert_eq!(h.result["page"]["overlay_title"], "You're all set");
    assert_eq!(h.result["page"]["display_name"], "Example Bank");
    assert!(
        !strings(&h.result["layouts"]["ended"]["stored_keys"]).contains(&token_key(&fake)),
        "the token was kept after the end: {}",
        h.result
    );
    assert_eq!(fake.calls("session"), 1, "{}", h.result);
    assert_eq!(fake.calls("websocket"), 1, "{}", h.result);
}

/// The takeover ends and the watcher's connection is just closed, with no Close frame (as the
/// relay does when a frame to the viewer is not out within 10 ms of the end): the page asks
/// `session`, which says how it ended, and shows that, without opening a new WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_at_the_end_shows_how_it_ended() {
    let Some(desk) = desk("Please sign in to Example Bank", &[]) else {
        return;
    };
    let fake = Fake::new(&desk.x.socket);
    let base = fake.serve().await;
    let actions = json!([
        {"type": "http", "method": "POST", "url": "/fake/cut/timed_out"},
        {"type": "wait_state", "state": "ended"},
    ]);
    let h = run_harness_with(
        &desk.home,
        &format!("{base}/takeover/{}#token={}", fake.id, fake.view_token),
        &shot("cut-at-the-end"),
        Some(actions),
        "live",
        &[],
    )
    .await;
    eprintln!("cut at the end: {}", h.result);
    assert_ok(&h, "cut at the end");
    assert_eq!(
        (h.result["state"].as_str(), h.result["outcome"].as_str()),
        (Some("ended"), Some("timed_out"))
    );
    assert_eq!(h.result["page"]["overlay_title"], "Time ran out");
    assert_eq!(fake.calls("websocket"), 1, "{}", h.result);
    assert!(fake.calls("session") >= 2, "{}", h.result);
}

/// The page's clock says the takeover is past its deadline (the sandbox's `expires_at`
/// behind the server's `Date`, which happens with clock skew) but the server still says
/// live, so the page asks again every 5 s: a tab replaced by a second one does not take
/// control back when it asks (the other would do the same 5 s later, for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_past_the_deadline_do_not_take_control_from_each_other() {
    let Some(desk) = desk("Please sign in to Example Bank", &[]) else {
        return;
    };
    let fake = Fake::new_with(&desk.x.socket, |f| f.expires_at -= 300 + 20);
    let base = fake.serve().await;
    let actions = json!([
        {"type": "open_tab"},
        {"type": "wait_state", "state": "replaced"},
        // The page asks the session every 5 s once 15 s past its deadline; this is 20 s
        // past from the start, so at least two of its asks fall in here.
        {"type": "pause", "ms": 12000},
        {"type": "screenshot", "path": shot("past-deadline-replaced")},
    ]);
    let h = run_harness_with(
        &desk.home,
        &control_url(&base, &fake),
        &shot("past-deadline-two-tabs"),
        Some(actions),
        "live",
        &[],
    )
    .await;
    eprintln!("two tabs past the deadline: {}", h.result);
    assert_ok(&h, "two tabs past the deadline");
    assert_eq!(
        states(&h),
        ["connecting", "live", "replaced"],
        "{}",
        h.result
    );
    assert_eq!(
        strings(&h.result["tab"]["states"]),
        ["connecting", "live"],
        "{}",
        h.result
    );
    assert_eq!(h.result["page"]["timer"], "Time's up", "{}", h.result);
    assert!(
        fake.calls("session") >= 4,
        "the page never asked: {}",
        h.result
    );
    assert_eq!(fake.controlling.load(Ordering::SeqCst), 2, "{}", h.result);
    assert_eq!(fake.replaced.load(Ordering::SeqCst), 1, "{}", h.result);
}

const LONG_LOGIN_URL: &str = "https://accounts.examplebank-online-services.com/authentication/v2/interactive-sign-in/continue_with_multi_factor_verification?flow=web";

/// The agent's reason at its longest (1000 characters).
fn long_reason() -> String {
    let sentence = "I need to download your March statement and the last three years of tax \
                    documents before the filing deadline. ";
    sentence.repeat(10)[..1000].trim_end().to_owned()
}

/// On a phone (390x844, touch): a long login URL and the bar's buttons and timer fit the
/// screen: nothing wider than it, no button's text spilling out of it, the time left on
/// one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_fits_a_long_login_url_and_the_bar() {
    let Some(desk) = desk("Please sign in to Example Bank", &[]) else {
        return;
    };
    let fake = Fake::new_with(&desk.x.socket, |f| {
        f.login_url = LONG_LOGIN_URL.into();
        f.reason = long_reason();
    });
    let base = fake.serve().await;
    let actions = json!([{"type": "layout", "name": "phone"}]);
    let h = run_harness_with(
        &desk.home,
        &control_url(&base, &fake),
        &shot("phone-long-url"),
        Some(actions),
        "live",
        &["--viewport", "390x844", "--mobile"],
    )
    .await;
    eprintln!("phone: {}", h.result);
    assert_ok(&h, "phone");
    let layout = &h.result["layouts"]["phone"];
    assert_eq!(layout["inner_width"], 390, "{layout}");
    assert!(
        layout["scroll_width"].as_u64() <= Some(390),
        "the page is wider than the phone: {layout}"
    );
    let buttons = layout["buttons"].as_array().expect("buttons");
    let ids: Vec<&str> = buttons.iter().filter_map(|b| b["id"].as_str()).collect();
    assert!(
        ids.contains(&"btn-complete") && ids.contains(&"btn-cancel"),
        "{layout}"
    );
    for b in buttons {
        assert!(
            b["scroll_height"].as_u64() <= b["client_height"].as_u64()
                && b["scroll_width"].as_u64() <= b["client_width"].as_u64(),
            "a button's text spills out of it: {b}"
        );
        assert!(
            b["right"].as_u64() <= Some(390),
            "a button is off screen: {b}"
        );
    }
    assert_eq!(layout["timer_lines"], 1, "the time left wraps: {layout}");
}

/// A reason too long for its two lines is clamped, but the whole of it can be read: in
/// its tooltip, and by "Show all", after which none of it is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reason_can_be_read_whole() {
    let Some(desk) = desk("Please sign in to Example Bank", &[]) else {
        return;
    };
    let reason = long_reason();
    let fake = Fake::new_with(&desk.x.socket, |f| f.reason = reason.clone());
    let base = fake.serve().await;
    let actions = json!([
        {"type": "layout", "name": "clamped"},
        {"type": "click_element", "selector": "#reason-more"},
        {"type": "layout", "name": "open"},
    ]);
    let h = run_harness_with(
        &desk.home,
        &control_url(&base, &fake),
        &shot("long-reason-open"),
        Some(actions),
        "live",
        &[],
    )
    .await;
    eprintln!("long reason: {}", h.result);
    assert_ok(&h, "long reason");
    let clamped = &h.result["layouts"]["clamped"]["reason"];
    assert!(
        clamped["scroll_height"].as_u64() > clamped["client_height"].as_u64(),
        "not clamped to start with: {clamped}"
    );
    assert_eq!(clamped["more_visible"], true, "{clamped}");
    assert_eq!(clamped["title"].as_str(), Some(reason.as_str()));
    let open = &h.result["layouts"]["open"]["reason"];
    assert!(
        open["scroll_height"].as_u64() <= open["client_height"].as_u64(),
        "still cut off after Show all: {open}"
    );
    assert_eq!(
        open["more_visible"], true,
        "no way back to two lines: {open}"
    );
}

/// A keyboard alone: the screen (noVNC's canvas, which takes every key, Tab included) is a
/// tab stop described by the page's hint on leaving it, and F6, as the hint says, leaves it
/// for the hint, from where Shift+Tab reaches the page's buttons and Tab goes back into the
/// screen. A watcher's canvas is no tab stop, and gets no hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyboard_can_leave_the_screen_as_the_page_says() {
    let Some(desk) = desk("Please sign in to Example Bank", &[]) else {
        return;
    };
    let fake = Fake::new(&desk.x.socket);
    let base = fake.serve().await;
    let actions = json!([
        {"type": "focus", "name": "live"},
        {"type": "press", "key": "Tab"},
        {"type": "focus", "name": "after_tab"},
        {"type": "press", "key": "F6"},
        {"type": "focus", "name": "after_f6"},
        {"type": "screenshot", "path": shot("keyboard-left-the-screen")},
        {"type": "press", "key": "Shift+Tab"},
        {"type": "focus", "name": "back"},
        // On through "Type text into the sandbox" (its field and button) into the screen.
        {"type": "press", "key": "Tab"},
        {"type": "press", "key": "Tab"},
        {"type": "press", "key": "Tab"},
        {"type": "focus", "name": "tabbed_in"},
    ]);
    let h = run_harness(
        &desk.home,
        &control_url(&base, &fake),
        &shot("keyboard"),
        Some(actions),
        "live",
    )
    .await;
    eprintln!("keyboard: {}", h.result);
    assert_ok(&h, "keyboard");
    let keys = &h.result["page"]["screen_keys"];
    assert_eq!(keys["visible"], true, "{keys}");
    assert!(
        keys["text"]
            .as_str()
            .is_some_and(|t| t.contains("Press F6 to leave it")),
        "{keys}"
    );
    assert_eq!(keys["canvas_described_by"], "screen-keys", "{keys}");
    assert_eq!(keys["canvas_tab_index"], 0, "{keys}");
    assert_eq!(keys["canvas_label"], "The sandbox's browser", "{keys}");
    let focuses = &h.result["focuses"];
    assert_eq!(
        focuses,
        &json!({
            "live": "canvas",
            // Tab went to the sandbox; the page kept it in the screen.
            "after_tab": "canvas",
            "after_f6": "screen-keys",
            "back": "btn-complete",
            "tabbed_in": "canvas",
        }),
        "{}",
        h.result
    );

    let view = run_harness(
        &desk.home,
        &format!("{base}/takeover/{}#token={}", fake.id, fake.view_token),
        &shot("keyboard-view-only"),
        None,
        "live",
    )
    .await;
    assert_ok(&view, "keyboard, view only");
    let keys = &view.result["page"]["screen_keys"];
    assert_eq!(keys["visible"], false, "{keys}");
    assert_eq!(keys["canvas_tab_index"], -1, "{keys}");
}
