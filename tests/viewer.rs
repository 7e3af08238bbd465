//! The takeover viewer end to end: our routes plus an in-test fake of the takeover side,
//! a real Xvnc with an `xmessage` window, and the system Chromium driven by
//! `tests/e2e/viewer.mjs` like a person: it waits for real pixels, clicks and types on the
//! remote desktop, presses "I've logged in" / "I can't log in", survives a dropped
//! connection, and shows the outcome. Screenshots land in `target/e2e-artifacts/`.

mod support;
#[path = "support/viewer.rs"]
mod viewer_support;

use std::time::Duration;

use serde_json::{json, Value};
use viewer_support::*;

const NOVNC_RFB: &str = "/usr/share/novnc/core/rfb.js";

#[tokio::test]
async fn static_routes_confine_novnc_and_serve_the_page() {
    if !tools_present(&[NOVNC_RFB]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Fake::new(&dir.path().join("unused.sock"));
    let base = fake.serve().await;

    let (status, headers, body) = raw_get(&base, "/takeover/novnc/core/rfb.js").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert!(headers["cache-control"].contains("max-age"), "{headers:?}");
    assert!(String::from_utf8_lossy(&body).contains("export default class RFB"));
    // What rfb.js imports from outside core/ must be reachable too.
    let (status, _, _) = raw_get(&base, "/takeover/novnc/vendor/pako/lib/zlib/inflate.js").await;
    assert_eq!(status, 200);

    for path in [
        "/takeover/novnc/../../etc/passwd",
        "/takeover/novnc/core/../../../etc/passwd",
        "/takeover/novnc/%2e%2e/%2e%2e/etc/passwd",
        "/takeover/novnc/..%2f..%2f..%2fetc%2fpasswd",
        "/takeover/novnc/core%2f..%2f..%2f..%2fetc%2fpasswd",
        "/takeover/novnc/%2fetc%2fpasswd",
        "/takeover/novnc//etc/passwd",
        "/takeover/novnc/..%5c..%5cetc%5cpasswd",
        "/takeover/novnc/core/rfb.js%00.png",
        "/takeover/novnc/utils/novnc_proxy",
        "/takeover/novnc/core",
        "/takeover/novnc/core/missing.js",
    ] {
        let (status, _, body) = raw_get(&base, path).await;
        assert!(status == 404 || status == 400, "{path} answered {status}");
        assert!(
            !String::from_utf8_lossy(&body).contains("root:"),
            "{path} leaked a file"
        );
    }

    let (status, headers, body) = raw_get(&base, "/takeover/tk_test-1").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = &headers["content-security-policy"];
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "CSP lacks {part}: {csp}");
    }
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-frame-options"], "DENY");
    let html = String::from_utf8_lossy(&body);
    assert!(!html.contains(&fake.control_token) && !html.contains(&fake.view_token));
    // noVNC's modules are listed for preloading, rfb.js's imports down to pako's, each one
    // a file the page's own path serves.
    let preloaded: Vec<&str> = html
        .lines()
        .filter_map(|l| l.strip_prefix("<link rel=\"modulepreload\" href=\""))
        .filter_map(|l| l.strip_suffix("\">"))
        .collect();
    for module in [
        "novnc/core/rfb.js",
        "novnc/core/util/logging.js",
        "novnc/core/decoders/tight.js",
        "novnc/vendor/pako/lib/zlib/inflate.js",
        "novnc/vendor/pako/lib/zlib/inffast.js",
    ] {
        assert!(preloaded.contains(&module), "{module} not in {preloaded:?}");
    }
    assert!(
        !html.contains("<!-- noVNC's modules -->"),
        "the marker was left in"
    );
    for module in &preloaded {
        let (status, headers, _) = raw_get(&base, &format!("/takeover/{module}")).await;
        assert_eq!(status, 200, "{module}");
        assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    }
    for bad in [
        "/takeover/a.b",
        "/takeover/a%20b",
        &format!("/takeover/{}", "a".repeat(65)),
    ] {
        assert_eq!(raw_get(&base, bad).await.0, 404, "{bad}");
    }
    let (status, headers, _) = raw_get(&base, "/takeover/assets/viewer.js").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
}

fn shot(name: &str) -> std::path::PathBuf {
    artifacts().join(format!("viewer-{name}.png"))
}

fn assert_ok(h: &Harness, what: &str) {
    assert!(h.ok, "{what}: harness failed: {}\n{}", h.stderr, h.result);
    assert_eq!(
        h.result["csp_violations"],
        json!([]),
        "{what}: CSP violations: {}",
        h.result
    );
}

fn states(h: &Harness) -> Vec<String> {
    h.result["states"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A real Xvnc showing an xmessage window (real pixels for noVNC to draw), and a home for
/// the headless browser.
struct Desk {
    dir: tempfile::TempDir,
    home: std::path::PathBuf,
    x: Xvnc,
    xmsg: usize,
}

/// Starts a [`Desk`]; `None` when a tool (the common ones and `extra`) is missing outside CI.
/// Blocks: call from a multi-thread runtime.
fn desk(text: &str, extra: &[&str]) -> Option<Desk> {
    let modules = repo().join("tests/e2e/node_modules/playwright-core");
    let modules = modules.to_str().expect("utf-8 path");
    let mut tools = vec![
        "/usr/bin/chromium",
        "/usr/bin/Xvnc",
        "/usr/bin/node",
        "/usr/bin/xmessage",
        NOVNC_RFB,
        modules,
    ];
    tools.extend_from_slice(extra);
    if !tools_present(&tools) {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    tokio::task::block_in_place(|| {
        let mut x = Xvnc::start(dir.path());
        let xmsg_out = dir.path().join("xmessage.out");
        let xmsg = x.xmessage(text, &xmsg_out);
        Some(Desk { dir, home, x, xmsg })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_end_to_end() {
    let Some(Desk {
        dir,
        home,
        mut x,
        xmsg,
    }) = desk("Please sign in to Example Bank", &["/usr/bin/xdotool"])
    else {
        return;
    };
    let report = |what: &str, h: &Harness, x: &Xvnc| {
        eprintln!("{what}: {}", h.result);
        if !h.ok {
            eprintln!("Xvnc log:\n{}", x.log_tail());
        }
    };

    // 1. A wrong token: the error state, and the WebSocket is never even tried.
    let fake = Fake::new(&x.socket);
    let base = fake.serve().await;
    let h = run_harness(
        &home,
        &format!("{base}/takeover/{}#token=wrong_token_123456", fake.id),
        &shot("bad-token"),
        None,
        "error",
    )
    .await;
    report("bad token", &h, &x);
    assert_ok(&h, "bad token");
    assert_eq!(h.result["state"], "error");
    assert_eq!(
        h.result["page"]["overlay_title"],
        "This link is not valid or has expired"
    );
    assert_eq!(fake.calls("websocket"), 0);
    assert!(fake.calls("session") >= 1);

    // 2. View only: live with real pixels, no buttons, input not sent; the server ends it
    //    with close code 4000 "timed_out" and the page says so.
    x.move_pointer(10, 10);
    let fake = Fake::new(&x.socket);
    let base = fake.serve().await;
    let actions = json!([
        {"type": "click", "x": 640, "y": 400},
        {"type": "screenshot", "path": shot("view-live")},
        {"type": "http", "method": "POST", "url": "/fake/end/timed_out"},
        {"type": "wait_state", "state": "ended"},
    ]);
    let h = run_harness(
        &home,
        &format!("{base}/takeover/{}#token={}", fake.id, fake.view_token),
        &shot("view-ended"),
        Some(actions),
        "live",
    )
    .await;
    report("view", &h, &x);
    assert_ok(&h, "view");
    assert_eq!(h.result["page"]["buttons_visible"], false);
    assert_eq!(h.result["page"]["view_only"], true);
    assert_eq!(
        (h.result["state"].as_str(), h.result["outcome"].as_str()),
        (Some("ended"), Some("timed_out"))
    );
    assert_eq!(h.result["page"]["overlay_title"], "Time ran out");
    assert_eq!(
        x.pointer(),
        (10, 10),
        "a view-only viewer moved the pointer"
    );
    assert!(fake
        .protocols_seen
        .lock()
        .expect("lock")
        .iter()
        .any(|p| p == "grexal.v1"));
    // And asks the relay to do the RFB handshake: noVNC went live on the relay's greeting.
    assert!(fake
        .protocols_seen
        .lock()
        .expect("lock")
        .iter()
        .any(|p| p == "grexal.pipelined-handshake"));

    // 3. Control: the page shows who and why, clicks land where aimed, keys reach the
    //    desktop (Return presses xmessage's default button), "I've logged in" completes.
    // On the message text, above xmessage's buttons: the click itself must press nothing.
    let (wx, wy, ww, _) = x.window("xmessage");
    let (cx, cy) = (wx + ww / 2, wy + 6);
    let fake = Fake::new(&x.socket);
    let base = fake.serve().await;
    let actions = json!([
        {"type": "screenshot", "path": shot("control-live")},
        {"type": "click", "x": cx, "y": cy},
        {"type": "press", "key": "Enter"},
        {"type": "complete"},
        {"type": "wait_state", "state": "ended"},
    ]);
    let h = run_harness(
        &home,
        &format!("{base}/takeover/{}#token={}", fake.id, fake.control_token),
        &shot("control-completed"),
        Some(actions),
        "live",
    )
    .await;
    report("control", &h, &x);
    assert_ok(&h, "control");
    let first_pixels = h.result["first_pixels_ms"]
        .as_u64()
        .expect("first_pixels_ms");
    eprintln!("first real pixels after {first_pixels} ms");
    assert_eq!(
        (h.result["state"].as_str(), h.result["outcome"].as_str()),
        (Some("ended"), Some("completed"))
    );
    assert_eq!(h.result["page"]["display_name"], "Example Bank");
    let hint = h.result["page"]["login_hint"].as_str().unwrap_or_default();
    assert!(hint.contains("log in at bank.example/login"), "{hint}");
    let reason = h.result["page"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("March statement"), "{reason}");
    assert!(
        !h.result["url"]
            .as_str()
            .unwrap_or("token")
            .contains("token"),
        "the token stayed in the address bar"
    );
    let st = states(&h);
    assert_eq!(st.first().map(String::as_str), Some("connecting"), "{st:?}");
    assert!(
        st.contains(&"live".to_string()) && st.last().map(String::as_str) == Some("ended"),
        "{st:?}"
    );
    assert_eq!(fake.calls("complete"), 1);
    let (px, py) = x.pointer();
    assert!(
        (px - cx).abs() <= 2 && (py - cy).abs() <= 2,
        "click landed at ({px},{py}), not ({cx},{cy})"
    );
    let status = tokio::task::block_in_place(|| x.wait_extra(xmsg, Duration::from_secs(10)));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "Return did not press xmessage's default button"
    );

    // 4. A dropped connection: reconnecting, then live again with pixels; "I can't log in".
    let _second = tokio::task::block_in_place(|| {
        x.xmessage("Second window", &dir.path().join("xmessage2.out"))
    });
    let fake = Fake::new(&x.socket);
    let base = fake.serve().await;
    let actions = json!([
        {"type": "http", "method": "POST", "url": "/fake/drop"},
        {"type": "wait_seen", "state": "reconnecting"},
        {"type": "screenshot", "path": shot("reconnecting")},
        {"type": "wait_pixels"},
        {"type": "cancel"},
        {"type": "wait_state", "state": "ended"},
    ]);
    let h = run_harness(
        &home,
        &format!("{base}/takeover/{}#token={}", fake.id, fake.control_token),
        &shot("cancelled"),
        Some(actions),
        "live",
    )
    .await;
    report("reconnect", &h, &x);
    assert_ok(&h, "reconnect");
    let st = states(&h);
    let live_again = st
        .iter()
        .skip_while(|s| *s != "reconnecting")
        .any(|s| s == "live");
    assert!(live_again, "never live again after reconnecting: {st:?}");
    assert_eq!(
        (h.result["state"].as_str(), h.result["outcome"].as_str()),
        (Some("ended"), Some("cancelled"))
    );
    assert!(fake.calls("websocket") >= 2);
    assert_eq!(fake.calls("cancel"), 1);
    let v: Value = h.result.clone();
    assert_eq!(v["page"]["overlay_title"], "Login cancelled");
}

/// Over a link with a 50 ms round trip (a proxy that delays every chunk 25 ms each way):
/// the page goes live with real pixels and "I've logged in" still completes. Prints how
/// long the page took from opening to the first real pixels, and how many connections the
/// browser opened (`docs/performance.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_goes_live_over_a_slow_link() {
    let Some(Desk {
        dir: _dir, home, x, ..
    }) = desk("Slow link", &[])
    else {
        return;
    };
    let fake = Fake::new(&x.socket);
    let base = fake.serve().await;
    let (slow, connections) = slow_link(&base, Duration::from_millis(25)).await;
    let actions = json!([
        {"type": "complete"},
        {"type": "wait_state", "state": "ended"},
    ]);
    let h = run_harness(
        &home,
        &format!("{slow}/takeover/{}#token={}", fake.id, fake.control_token),
        &shot("slow-link"),
        Some(actions),
        "live",
    )
    .await;
    if !h.ok {
        eprintln!("Xvnc log:\n{}", x.log_tail());
    }
    assert_ok(&h, "slow link");
    let first_pixels = h.result["first_pixels_ms"]
        .as_u64()
        .expect("first_pixels_ms");
    eprintln!(
        "e2e figure: 50 ms round trip: page open -> first real pixels {first_pixels} ms, {} connections",
        connections.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert_eq!(
        (h.result["state"].as_str(), h.result["outcome"].as_str()),
        (Some("ended"), Some("completed"))
    );
    assert_eq!(fake.calls("complete"), 1);
}
