//! The takeover viewer end to end: our routes plus an in-test fake of the takeover side,
//! a real Xvnc with an `xmessage` window, and the system Chromium driven by
//! `tests/e2e/viewer.mjs` like a person: it waits for real pixels, clicks and types on the
//! remote desktop, presses "I've logged in" / "I can't log in", survives a dropped
//! connection, and shows the outcome. Screenshots land in `target/e2e-artifacts/`.

mod support;
#[path = "support/viewer_desk.rs"]
mod viewer_desk;
#[path = "support/viewer_net.rs"]
mod viewer_net;
#[path = "support/viewer.rs"]
mod viewer_support;

use std::time::Duration;

use serde_json::{json, Value};
use viewer_desk::*;
use viewer_net::*;
use viewer_support::*;

/// The viewer's routes behind the fake takeover side, with no desktop (`None` when noVNC is
/// missing): its temporary directory, the fake and its base URL.
async fn static_server() -> Option<(tempfile::TempDir, std::sync::Arc<Fake>, String)> {
    if !tools_present(&[NOVNC_RFB]) {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Fake::new(&dir.path().join("unused.sock"));
    let base = fake.serve().await;
    Some((dir, fake, base))
}

#[tokio::test]
async fn static_routes_confine_novnc_and_serve_the_page() {
    let Some((_dir, fake, base)) = static_server().await else {
        return;
    };

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
    let preloaded = preloaded_modules(&html);
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

#[tokio::test]
async fn static_routes_gzip_for_browsers_that_accept_it() {
    let Some((_dir, _fake, base)) = static_server().await else {
        return;
    };
    let gunzip = |bytes: &[u8]| {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut plain)
            .expect("a valid gzip stream");
        plain
    };
    // What Chromium sends.
    let browser = [("Accept-Encoding", "gzip, deflate, br, zstd")];

    let on_disk = std::fs::read(NOVNC_RFB).expect("rfb.js");
    let (status, headers, body) =
        raw_get_with(&base, "/takeover/novnc/core/rfb.js", &browser).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    assert!(headers["vary"]
        .to_ascii_lowercase()
        .contains("accept-encoding"));
    // The headers of the uncompressed response are all still there.
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert!(headers["cache-control"].contains("max-age"), "{headers:?}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        body.len() * 2 < on_disk.len(),
        "{} gzipped bytes for a {}-byte module",
        body.len(),
        on_disk.len()
    );
    assert_eq!(gunzip(&body), on_disk, "rfb.js round-trips through gzip");

    // A client that does not ask, or refuses gzip, gets the file as it is.
    for headers_sent in [
        &[][..],
        &[("Accept-Encoding", "identity")][..],
        &[("Accept-Encoding", "gzip;q=0")][..],
    ] {
        let (status, headers, body) =
            raw_get_with(&base, "/takeover/novnc/core/rfb.js", headers_sent).await;
        assert_eq!(status, 200);
        assert!(
            !headers.contains_key("content-encoding"),
            "{headers_sent:?}: {headers:?}"
        );
        assert_eq!(body, on_disk, "{headers_sent:?}");
    }

    // The page keeps its CSP and no-store when gzipped, and our own assets are gzipped too.
    let (status, headers, body) = raw_get_with(&base, "/takeover/tk_test-1", &browser).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers["content-security-policy"].contains("default-src 'none'"));
    let (_, _, plain) = raw_get(&base, "/takeover/tk_test-1").await;
    assert_eq!(gunzip(&body), plain);
    for asset in ["/takeover/assets/viewer.js", "/takeover/assets/viewer.css"] {
        let (status, headers, body) = raw_get_with(&base, asset, &browser).await;
        assert_eq!(status, 200, "{asset}");
        assert_eq!(headers["content-encoding"], "gzip", "{asset}");
        let (_, _, plain) = raw_get(&base, asset).await;
        assert_eq!(gunzip(&body), plain, "{asset}");
    }

    // Errors stay what they were: a JSON 404.
    let (status, _, body) =
        raw_get_with(&base, "/takeover/novnc/core/../../../etc/passwd", &browser).await;
    assert_eq!(status, 404);
    let error: Value = serde_json::from_slice(&gunzip(&body)).expect("a JSON error");
    assert_eq!(error["error"]["code"], "not_found");
}

/// The modules a viewer page lists for `modulepreload`, as the page's relative URLs.
fn preloaded_modules(html: &str) -> Vec<&str> {
    html.lines()
        .filter_map(|l| l.strip_prefix("<link rel=\"modulepreload\" href=\""))
        .filter_map(|l| l.strip_suffix("\">"))
        .collect()
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
        {"type": "viewport", "width": 390, "height": 844},
        {"type": "screenshot", "path": shot("view-phone")},
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
    // No "Type text into the sandbox" for a watcher.
    assert_eq!(
        h.result["page"]["type_text"],
        json!({"visible": false, "enabled": false, "value_length": 0})
    );
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
    let offered = fake.protocols_seen.lock().expect("lock").clone();
    assert!(offered.iter().any(|p| p == "grexal.v1"), "{offered:?}");
    // And asks the relay to do the RFB handshake: noVNC went live on the relay's greeting.
    assert!(
        offered.iter().any(|p| p == "grexal.pipelined-handshake"),
        "{offered:?}"
    );

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
    // Once the takeover has ended, "Type text into the sandbox" is gone.
    assert_eq!(
        h.result["page"]["type_text"],
        json!({"visible": false, "enabled": false, "value_length": 0})
    );
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
        // The page at a laptop's size and a phone's, with "Type text into the sandbox".
        {"type": "viewport", "width": 1280, "height": 800},
        {"type": "screenshot", "path": shot("control-1280x800")},
        {"type": "viewport", "width": 390, "height": 844},
        {"type": "screenshot", "path": shot("control-phone")},
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
/// the page goes live with real pixels, having opened its WebSocket while noVNC's modules
/// loaded, and "I've logged in" still completes. Prints how
/// long the page took from opening to the first real pixels, and how many connections the
/// browser opened (`docs/performance.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_goes_live_over_a_slow_link() {
    live_over_a_link("slow-link", None).await;
}

/// The same over a narrow link: a 50 ms round trip and 8 Mbit/s from the sandbox to the
/// browser, shared by all the browser's connections. Everything the browser was sent adds
/// up to less than noVNC's modules as files: they arrived gzipped, and the page still went
/// live in a real Chromium that had to un-gzip them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_goes_live_over_a_narrow_link() {
    let Some((bytes_down, page)) = live_over_a_link("narrow-link", Some(1_000_000)).await else {
        return;
    };
    // The modules the page lists for preloading: all the noVNC it loads.
    let modules: u64 = preloaded_modules(&String::from_utf8_lossy(&page))
        .into_iter()
        .map(|module| {
            let module = module.strip_prefix("novnc/").expect("under novnc/");
            std::fs::metadata(std::path::Path::new("/usr/share/novnc").join(module))
                .expect("a preloaded module is a file")
                .len()
        })
        .sum();
    assert!(modules > 100_000, "only {modules} bytes of modules listed");
    assert!(
        (bytes_down as u64) < modules,
        "the browser was sent {bytes_down} bytes in all, more than the {modules} bytes of \
         noVNC's modules alone: they were not compressed"
    );
}

/// The WebSocket the page opens early is lost before noVNC has loaded (the relay's side
/// drops it as soon as it is open, while the modules still travel a 50 ms link): once noVNC
/// is there the page opens a new one and goes live, without ever showing a lost
/// connection, and "I've logged in" completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_websocket_lost_before_novnc_loads() {
    let Some(run) = complete_over_a_link("early-drop", None, |fake| {
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while fake.ws_open.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no WebSocket opened"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let _ = fake.events.send(FakeEvent::Drop);
        })
    })
    .await
    else {
        return;
    };
    let (h, fake) = (&run.harness, &run.fake);
    run.meanwhile.await.expect("dropper");
    assert_eq!(fake.calls("websocket"), 2, "{}", h.result);
    // The first socket's greeting was dropped with it; the second was noVNC's from the start.
    assert_eq!(h.result["held_messages"], 0, "{}", h.result);
    assert_eq!(states(h), ["connecting", "live", "ended"]);
    assert_eq!(
        (h.result["state"].as_str(), h.result["outcome"].as_str()),
        (Some("ended"), Some("completed"))
    );
}

/// The sign-in link opened in a second tab: the newer tab takes control (the relay closes
/// the first with 4001 `replaced`), and the first stops there, offering "Use it here",
/// rather than reconnecting on its own and knocking the other off in turn, forever. Used,
/// control moves back; an ending in one tab reaches the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tab_takes_control_and_the_first_does_not_fight_back() {
    let Some(desk) = desk("Please sign in to Example Bank", &[]) else {
        return;
    };
    let fake = Fake::new(&desk.x.socket);
    let base = fake.serve().await;
    let actions = json!([
        {"type": "open_tab"},
        {"type": "wait_state", "state": "replaced"},
        {"type": "screenshot", "path": shot("replaced")},
        // Several of the page's reconnect delays (the first is 500 ms): a page that fought
        // back would have taken control again by now, more than once.
        {"type": "pause", "ms": 3000},
        {"type": "use_here"},
        {"type": "wait_pixels"},
        {"type": "tab_wait_state", "state": "replaced"},
        {"type": "complete"},
        {"type": "wait_state", "state": "ended"},
        // The replaced tab learns of the ending from the session, within its poll.
        {"type": "tab_wait_state", "state": "ended", "timeout_ms": 15000},
    ]);
    let h = run_harness(
        &desk.home,
        &format!("{base}/takeover/{}#token={}", fake.id, fake.control_token),
        &shot("replaced-ended"),
        Some(actions),
        "live",
    )
    .await;
    eprintln!("two tabs: {}", h.result);
    assert_ok(&h, "two tabs");
    let seen = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The first tab: live, replaced once, live again (after "Use it here"), ended.
    assert_eq!(
        states(&h),
        [
            "connecting",
            "live",
            "replaced",
            "connecting",
            "live",
            "ended"
        ],
        "{}",
        h.result
    );
    // The second: live until replaced by the first, then ended (it never reconnected).
    assert_eq!(
        seen(&h.result["tab"]["states"]),
        ["connecting", "live", "replaced", "ended"],
        "{}",
        h.result
    );
    assert_eq!(
        (
            h.result["tab"]["state"].as_str(),
            h.result["tab"]["outcome"].as_str()
        ),
        (Some("ended"), Some("completed"))
    );
    // Three controlling sockets in all: each tab's first, and the one "Use it here" opened.
    assert_eq!(
        fake.controlling.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "{}",
        h.result
    );
    assert_eq!(fake.replaced.load(std::sync::atomic::Ordering::SeqCst), 2);
    drop(desk);
}

/// A run of [`complete_over_a_link`].
struct OverALink<T> {
    harness: Harness,
    fake: std::sync::Arc<Fake>,
    /// The fake's own address, not through the link.
    base: String,
    link: Link,
    /// What the `meanwhile` hook returned.
    meanwhile: T,
}

/// Opens the viewer with the control token through a [`link`] with a 25 ms one-way delay
/// (and `downlink` bytes per second to the browser, if given), waits for real pixels and
/// completes the takeover; `meanwhile` gets the fake before the browser opens the page.
/// `None` when the desktop tools are missing.
async fn complete_over_a_link<T>(
    name: &str,
    downlink: Option<u64>,
    meanwhile: impl FnOnce(std::sync::Arc<Fake>) -> T,
) -> Option<OverALink<T>> {
    let Desk {
        dir: _dir, home, x, ..
    } = desk(name, &[])?;
    let fake = Fake::new(&x.socket);
    let base = fake.serve().await;
    let link = link(&base, Duration::from_millis(25), downlink).await;
    let meanwhile = meanwhile(fake.clone());
    let actions = json!([
        {"type": "complete"},
        {"type": "wait_state", "state": "ended"},
    ]);
    let harness = run_harness(
        &home,
        &format!(
            "{}/takeover/{}#token={}",
            link.base, fake.id, fake.control_token
        ),
        &shot(name),
        Some(actions),
        "live",
    )
    .await;
    if !harness.ok {
        eprintln!("Xvnc log:\n{}", x.log_tail());
    }
    assert_ok(&harness, name);
    Some(OverALink {
        harness,
        fake,
        base,
        link,
        meanwhile,
    })
}

/// [`complete_over_a_link`], and prints how long the page took to the first real pixels.
/// Returns the bytes the browser was sent and the page it was served.
async fn live_over_a_link(name: &str, downlink: Option<u64>) -> Option<(usize, Vec<u8>)> {
    let OverALink {
        harness: h,
        fake,
        base,
        link,
        ..
    } = complete_over_a_link(name, downlink, |_| ()).await?;
    let first_pixels = h.result["first_pixels_ms"]
        .as_u64()
        .expect("first_pixels_ms");
    let bytes_down = link.bytes_down.load(std::sync::atomic::Ordering::SeqCst);
    let downlink = downlink.map_or("no bandwidth limit".to_string(), |rate| {
        format!("{} Mbit/s down", rate * 8 / 1_000_000)
    });
    eprintln!(
        "e2e figure: 50 ms round trip, {downlink}: page open -> first real pixels {first_pixels} ms, \
         {} connections, {bytes_down} bytes to the browser",
        link.connections.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert_eq!(
        (h.result["state"].as_str(), h.result["outcome"].as_str()),
        (Some("ended"), Some("completed"))
    );
    assert_eq!(fake.calls("complete"), 1);
    // The page opened its WebSocket while noVNC's modules were still loading, not after
    // them: its opening and the relay's handshake overlap the loading.
    let requests = fake.requests.lock().expect("lock").clone();
    let websocket = requests
        .iter()
        .position(|path| path.ends_with("/websocket"))
        .expect("a WebSocket request");
    let last_module = requests
        .iter()
        .rposition(|path| path.starts_with("/takeover/novnc/"))
        .expect("noVNC's modules requested");
    assert!(
        websocket < last_module,
        "the WebSocket was requested only after noVNC's modules: {requests:?}"
    );
    // And what the relay sent before noVNC was there to take it (its handshake with the VNC
    // server, done while the modules loaded) was handed over, not lost: the page went live.
    let held = h.result["held_messages"].as_u64().expect("held_messages");
    assert!(
        held >= 1,
        "no message arrived before noVNC attached: {held}"
    );
    let (_, _, page) = raw_get(&base, &format!("/takeover/{}", fake.id)).await;
    Some((bytes_down, page))
}
