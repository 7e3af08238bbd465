//! The browser_login takeover with the whole stack, as a platform and a user would run it:
//! the real binary boots a desktop (Xvnc + Chromium), a Python agent (standard library
//! only, CDP over its own WebSocket client) drives Chromium to a login site served here
//! and asks for takeovers; the test, as the platform, reads `takeover_requested` from the
//! event stream and, as the user, opens the viewer in headless Chromium
//! (`tests/e2e/viewer.mjs`), clicks and types through the VNC canvas, and presses
//! "I've logged in" (round 1) or lets the success condition end it (round 2).
//!
//! Also: a view-only viewer's input never reaches the page; refused WebSockets get 401
//! before any RFB byte; Chromium killed mid-takeover restarts with its profile (the login
//! cookie survives) and the takeover goes on; the deadline (408) and the one-live-takeover
//! rule (409); a daemon stopped mid-takeover cancels it by `shutdown`. Skipped only when
//! chromium, Xvnc, noVNC, node or playwright-core are missing and `CI` is unset. Screenshots go to `target/e2e-artifacts/takeover-e2e-*.png`.
//!
//! Prints two latency figures for docs/performance.md (not asserted):
//! `cargo test --test takeover_e2e -- --nocapture 2>&1 | grep 'e2e figure'`.

#[path = "support/takeover_e2e.rs"]
mod e2e;
#[path = "support/login_site.rs"]
mod login_site;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{json, Value};
use support::{http_tcp, write};

const LONG: Duration = Duration::from_secs(90);

fn ended(run: &HarnessRun) -> (Option<&str>, Option<&str>) {
    (run.result["state"].as_str(), run.result["outcome"].as_str())
}

/// A takeover round of the end-to-end test, completed `by` after `user` logged in.
struct Round<'a> {
    name: &'a str,
    id: &'a str,
    by: &'a str,
    user: &'a str,
}

/// What every completed round must show, in this order: the viewer page ended
/// `completed`; the agent's wait returned it with `by`; the agent read `user`'s welcome page
/// over CDP; the platform got `takeover_ended` for the round's id. Returns the agent's
/// `waited` event. `events`: the platform's stream, if there is a platform (not in `dev`).
fn check_completed_round(
    d: &E2eDaemon,
    events: Option<&mut Sse>,
    h: &HarnessRun,
    round: Round,
) -> Value {
    check_harness(h, round.name, d);
    assert_eq!(
        ended(h),
        (Some("ended"), Some("completed")),
        "{}: {}",
        round.name,
        h.result
    );
    let waited = d.agent_event("waited", LONG);
    assert_eq!(
        (
            waited["status"].as_u64(),
            waited["body"]["outcome"].as_str(),
            waited["body"]["by"].as_str()
        ),
        (Some(200), Some("completed"), Some(round.by)),
        "{}: {waited}",
        round.name
    );
    let page = d.agent_event("page", LONG);
    let text = page["text"].as_str().unwrap_or_default();
    let url = page["url"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("Welcome, {}", round.user)) && url.ends_with("/welcome"),
        "{}: {page}",
        round.name
    );
    if let Some(events) = events {
        let end = events.next("takeover_ended", LONG);
        assert_eq!(
            (
                end.data["takeover_id"].as_str(),
                end.data["outcome"].as_str(),
                end.data["by"].as_str()
            ),
            (Some(round.id), Some("completed"), Some(round.by)),
            "{}",
            round.name
        );
    }
    waited
}

fn shot(name: &str) -> String {
    artifacts()
        .join(format!("takeover-e2e-{name}.png"))
        .display()
        .to_string()
}

#[test]
fn browser_login_takeover_end_to_end() {
    if skip_without_tools() {
        return;
    }
    let _one = serial();
    let site = LoginSite::start();
    let agent = repo().join("tests/agents/takeover_agent.py");
    let mut d = E2eDaemon::start(&site, Some(&agent));
    let mut events = d.events();
    // Subscribed: the agent may ask now.
    write(&d.go_file, "go", 0o644);
    let browser = d.agent_event("browser", LONG);
    assert!(browser["cdp_http_url"]
        .as_str()
        .is_some_and(|u| u.starts_with("http://127.0.0.1:")));
    let home = d.path("viewer-home");

    // Round 1: the user logs in through the viewer and presses "I've logged in".
    let requested = events.next("takeover_requested", LONG);
    let mut actions = login_actions("alice");
    actions.extend([
        // The browser has loaded the welcome page (the site served it to the session).
        json!({"type": "http", "method": "GET",
               "url": format!("{}/__wait_welcome?user=alice&n=1", site.url())}),
        json!({"type": "screenshot", "path": shot("round1-credentials-typed")}),
        json!({"type": "complete"}),
        json!({"type": "wait_state", "state": "ended"}),
    ]);
    let (child, started) = spawn_harness(
        &home,
        &viewer_url(&requested, "control_token"),
        "round1",
        &json!(actions),
    );
    let takeover = d.agent_event("takeover", LONG);
    let id1 = takeover["id"].as_str().expect("id").to_owned();
    assert_eq!(requested.data["takeover_id"], id1.as_str());
    assert_eq!(requested.data["connection_id"], CONNECTION);
    assert_eq!(takeover["viewer_url"], requested.data["viewer_url"]);
    let fields = d.agent_event("fields", LONG);
    let h1 = finish_harness(child, started);
    assert_eq!(h1.result["page"]["display_name"], "Example Site");
    let waited = check_completed_round(
        &d,
        Some(&mut events),
        &h1,
        Round {
            name: "round 1",
            id: &id1,
            by: "user",
            user: "alice",
        },
    );
    // The fixed click points were inside the fields, as the agent measured them on screen.
    for (name, (x, y)) in [("username", USERNAME_AT), ("password", PASSWORD_AT)] {
        let r: Vec<i64> = serde_json::from_value(fields["rects"][name].clone()).expect("rect");
        let (x, y) = (i64::from(x), i64::from(y));
        assert!(
            x >= r[0] && x < r[0] + r[2] && y >= r[1] && y < r[1] + r[3],
            "{name} at {r:?} does not hold ({x},{y})"
        );
    }

    // Round 2: a success condition; the user logs in and presses nothing.
    let requested2 = events.next("takeover_requested", LONG);
    let mut actions = login_actions("bob");
    actions.extend([json!({"type": "wait_state", "state": "ended"})]);
    let (child, started) = spawn_harness(
        &home,
        &viewer_url(&requested2, "control_token"),
        "round2",
        &json!(actions),
    );
    let takeover2 = d.agent_event("takeover", LONG);
    let id2 = takeover2["id"].as_str().expect("id").to_owned();
    assert_ne!(id1, id2);

    // Refused WebSockets on the real binary: 401 and not one RFB byte, before any upgrade.
    let control1 = requested.data["control_token"].as_str().expect("token");
    let view2 = requested2.data["view_token"].as_str().expect("token");
    for (id, protocols) in [
        (id2.as_str(), None),
        (id2.as_str(), Some("binary".to_owned())),
        (
            id2.as_str(),
            Some("binary, grexal.v1.AAAAwrongtokenAAAAAAAAAAAAAAAA".to_owned()),
        ),
        // The ended takeover's token, on its own id and on the live one.
        (id1.as_str(), Some(format!("binary, grexal.v1.{control1}"))),
        (id2.as_str(), Some(format!("binary, grexal.v1.{control1}"))),
        // A live takeover's token on another id.
        (id1.as_str(), Some(format!("binary, grexal.v1.{view2}"))),
    ] {
        let (status, raw) = ws_handshake(d.control, id, protocols.as_deref());
        let text = String::from_utf8_lossy(&raw);
        assert_eq!(status, 401, "{protocols:?}: {text}");
        assert!(
            !text.contains("RFB") && !text.contains("101 Switching"),
            "{text}"
        );
    }

    let h2 = finish_harness(child, started);
    check_completed_round(
        &d,
        Some(&mut events),
        &h2,
        Round {
            name: "round 2",
            id: &id2,
            by: "condition",
            user: "bob",
        },
    );
    assert_eq!(
        site.welcomes(),
        ["alice", "bob"],
        "the site saw both logins, in order"
    );

    d.agent_event("passed", LONG);
    let code = d.wait_exit(LONG);
    assert_eq!(
        code,
        9,
        "the agent's exit code through the daemon\n{}",
        d.diagnostics()
    );
    let exited = events.next("agent_exited", LONG);
    assert_eq!(exited.data["code"], 9);

    // The figures (wall clock on one machine: Python's time.time(), node's and the page's
    // Date.now(), ours). The user's browser is already running; the harness launches one,
    // so "page open" is split out.
    for (round, t, ev, h) in [
        (1, &takeover, &requested, &h1),
        (2, &takeover2, &requested2, &h2),
    ] {
        let posted_ms = t["posted_at"].as_f64().expect("posted_at") * 1000.0;
        let pixels_at = h.result["first_pixels_at"]
            .as_f64()
            .expect("first_pixels_at");
        let open_to_pixels = h.result["first_pixels_ms"]
            .as_f64()
            .expect("first_pixels_ms");
        eprintln!(
            "e2e figure: round {round}: POST /v1/takeovers -> first framebuffer pixels {:.0} ms \
             (POST -> SSE event {:.0} ms; viewer browser launch {:.0} ms; page open -> pixels {:.0} ms)",
            pixels_at - posted_ms,
            ev.at_ms - posted_ms,
            pixels_at - open_to_pixels - ev.at_ms,
            open_to_pixels
        );
    }
    let clicked_ms = h1.result["complete_clicked_at"]
        .as_f64()
        .expect("complete_clicked_at");
    let returned_ms = waited["at"].as_f64().expect("at") * 1000.0;
    eprintln!(
        "e2e figure: \"I've logged in\" click -> the agent's wait returned: {:.0} ms",
        returned_ms - clicked_ms
    );
}

/// `dev` on a desktop, as on a developer's machine: no platform, no control endpoint. The
/// viewer is served on loopback and, while a takeover is live, its URL (with the token) is
/// in a 0600 file, never in the log; the developer opens it, logs in through the live view
/// and presses "I've logged in" (round 1), or the success condition ends it (round 2).
/// On Xvfb + x11vnc, the other display backend (the other tests run Xvnc), as a
/// developer's machine is likelier to have: the whole cycle through x11vnc's Unix socket.
#[test]
fn dev_serves_the_takeover_viewer_on_loopback() {
    if skip_without_tools() {
        return;
    }
    let _one = serial();
    let site = LoginSite::start();
    let agent = repo().join("tests/agents/takeover_agent.py");
    let mut d = E2eDaemon::start_as(
        Mode::Dev,
        &site,
        Some(&agent),
        &["--display-backend", "xvfb"],
    );
    write(&d.go_file, "go", 0o644);
    d.agent_event("browser", LONG);
    let home = d.path("viewer-home");
    let url_file = d.path("takeover-url");
    let mut tokens = Vec::new();
    for (round, user, by) in [(1, "alice", "user"), (2, "bob", "condition")] {
        let takeover = d.agent_event("takeover", LONG);
        let id = takeover["id"].as_str().expect("id").to_owned();
        let viewer = takeover["viewer_url"].as_str().expect("viewer_url");
        assert!(viewer.starts_with("http://127.0.0.1:"), "{viewer}");
        let prefix = format!("{viewer}#token=");
        let url = wait_until("the takeover URL file", LONG, || {
            std::fs::read_to_string(&url_file)
                .ok()
                .filter(|text| text.starts_with(&prefix))
        });
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&url_file).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "the URL file's mode");
        let url = url.trim_end().to_owned();
        tokens.push(url[prefix.len()..].to_owned());
        let mut actions = login_actions(user);
        if round == 1 {
            actions.extend([
                json!({"type": "http", "method": "GET",
                       "url": format!("{}/__wait_welcome?user=alice&n=1", site.url())}),
                json!({"type": "complete"}),
            ]);
        }
        actions.push(json!({"type": "wait_state", "state": "ended"}));
        let h = run_harness(&home, &url, &format!("dev-round{round}"), &json!(actions));
        let name = format!("dev round {round}");
        check_completed_round(
            &d,
            None,
            &h,
            Round {
                name: &name,
                id: &id,
                by,
                user,
            },
        );
    }
    d.agent_event("passed", LONG);
    assert_eq!(d.wait_exit(LONG), 9, "{}", d.diagnostics());
    assert!(!url_file.exists(), "the URL file outlived the takeovers");
    let log = d.log_text();
    assert!(log.contains("dev: takeover viewer listening"), "{log}");
    // x11vnc (only it logs "vnc ready"; Xvnc is the display) on its Unix socket.
    let socket = d.path("desktop/vnc.sock");
    assert!(
        log.lines()
            .any(|l| l.contains("vnc ready")
                && l.contains(&format!("target=unix:{}", socket.display()))),
        "{log}"
    );
    assert!(log.contains("open the viewer URL in the file"), "{log}");
    for token in &tokens {
        assert!(token.len() >= 22, "{token}");
        assert!(!log.contains(token.as_str()), "a takeover token in the log");
        assert!(
            !d.agent_out
                .lock()
                .expect("lock")
                .join("\n")
                .contains(token.as_str()),
            "a takeover token on the agent's output"
        );
    }
}

/// (a) a view-only viewer's clicks and keys never reach the page, the controlling
/// viewer's do; (d) the deadline gives the agent 408 and a second live takeover 409.
#[test]
fn view_only_input_is_dropped_and_deadline_and_conflict() {
    if skip_without_tools() {
        return;
    }
    let _one = serial();
    let site = LoginSite::start();
    let mut d = E2eDaemon::start(&site, None);
    let mut events = d.events();
    let fields = "[document.getElementById('username').value, document.getElementById('password').value, document.readyState]";
    let (cdp, login) = d.open_login_page(&site, fields, LONG);

    let id = d.request_takeover("view-only check", 120);
    let requested = events.next("takeover_requested", LONG);
    let home = d.path("viewer-home");

    // The view-only viewer does everything a user would.
    let mut actions = login_actions("mallory");
    actions.push(json!({"type": "screenshot", "path": shot("view-only-typed")}));
    let view = run_harness(
        &home,
        &viewer_url(&requested, "view_token"),
        "view-only",
        &json!(actions),
    );
    check_harness(&view, "view-only", &d);
    assert_eq!(view.result["page"]["view_only"], true);
    assert_eq!(view.result["page"]["buttons_visible"], false);
    let after_view = evaluate(&cdp, &login, fields);
    assert_eq!(
        (after_view[0].as_str(), after_view[1].as_str()),
        (Some(""), Some("")),
        "a view-only viewer's input reached the page"
    );
    assert!(
        pages(&cdp).iter().any(|p| p["url"] == login.as_str()),
        "the form was submitted"
    );

    // The controlling viewer's input does reach it (no Enter: the form stays).
    let actions = json!([
        {"type": "click", "x": USERNAME_AT.0, "y": USERNAME_AT.1},
        {"type": "type", "text": "carol"},
        {"type": "screenshot", "path": shot("control-typed")},
    ]);
    let control = run_harness(
        &home,
        &viewer_url(&requested, "control_token"),
        "control-typed",
        &actions,
    );
    check_harness(&control, "control", &d);
    wait_until(
        "the controlling viewer's keys in the field",
        Duration::from_secs(10),
        || (evaluate(&cdp, &login, fields)[0] == "carol").then_some(()),
    );
    // The viewer left; the takeover is still live until the platform cancels it.
    let r = d.agent("GET", &format!("/v1/takeovers/{id}"), None);
    assert_eq!(r.json()["state"], "live");
    let cancel = http_tcp(
        d.control,
        "POST",
        &format!("/v1/takeovers/{id}/cancel"),
        Some(&d.token),
        None,
    )
    .expect("cancel");
    assert_eq!(
        cancel.status,
        200,
        "{}",
        String::from_utf8_lossy(&cancel.body)
    );
    let ended = events.next("takeover_ended", LONG);
    assert_eq!(
        (ended.data["outcome"].as_str(), ended.data["by"].as_str()),
        (Some("cancelled"), Some("platform"))
    );

    // (d) A 2 s deadline, and a second request while it is live.
    let id = d.request_takeover("deadline", 2);
    let started = Instant::now();
    let second = d.agent(
        "POST",
        "/v1/takeovers",
        Some(&json!({"connection_id": CONNECTION, "reason": "again"})),
    );
    assert_eq!(
        (second.status, second.error_code()),
        (409, "takeover_conflict".to_owned())
    );
    let waited = d.agent(
        "GET",
        &format!("/v1/takeovers/{id}/wait?timeout_seconds=30"),
        None,
    );
    let took = started.elapsed();
    assert_eq!(
        (waited.status, waited.error_code()),
        (408, "takeover_timeout".to_owned())
    );
    assert_eq!(waited.json()["takeover"]["outcome"], "timed_out");
    assert!(
        took < Duration::from_secs(10),
        "the 2 s deadline took {took:?}"
    );
    let ended = events.next("takeover_ended", LONG);
    assert_eq!(
        (
            ended.data["takeover_id"].as_str(),
            ended.data["outcome"].as_str()
        ),
        (Some(id.as_str()), Some("timed_out"))
    );
    assert_eq!(d.stop(), 0, "{}", d.diagnostics());
}

/// SIGTERM with a takeover live and the agent's wait parked on it: the takeover ends
/// `cancelled` by `shutdown` (not `failed`, which says the browser died), and both the
/// wait, answered before the socket closes, and the platform's stream say so; the daemon
/// then exits 0.
#[test]
fn stopping_the_daemon_cancels_a_live_takeover_by_shutdown() {
    if skip_without_tools() {
        return;
    }
    let _one = serial();
    let site = LoginSite::start();
    let mut d = E2eDaemon::start(&site, None);
    let mut events = d.events();
    let id = d.request_takeover("shutdown check", 300);
    let requested = events.next("takeover_requested", LONG);
    assert_eq!(requested.data["takeover_id"], id.as_str());

    let wait = std::thread::spawn({
        let (socket, id) = (d.socket.clone(), id.clone());
        move || {
            support::http_unix(
                &socket,
                "GET",
                &format!("/v1/takeovers/{id}/wait?timeout_seconds=120"),
                None,
            )
        }
    });
    wait_until("the wait to be parked", LONG, || {
        d.log_text().contains("wait parked").then_some(())
    });
    assert_eq!(d.stop(), 0, "{}", d.diagnostics());

    let waited = wait
        .join()
        .expect("the wait's thread")
        .unwrap_or_else(|e| panic!("the wait got no answer: {e}\n{}", d.diagnostics()));
    let body = waited.json();
    assert_eq!(
        (
            waited.status,
            body["error"]["code"].as_str(),
            body["takeover"]["outcome"].as_str(),
            body["takeover"]["by"].as_str()
        ),
        (
            409,
            Some("takeover_cancelled"),
            Some("cancelled"),
            Some("shutdown")
        ),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("the sandbox is stopping"), "{body}");
    let ended = events.next("takeover_ended", LONG);
    assert_eq!(
        (
            ended.data["takeover_id"].as_str(),
            ended.data["outcome"].as_str(),
            ended.data["by"].as_str()
        ),
        (Some(id.as_str()), Some("cancelled"), Some("shutdown")),
        "{:?}",
        ended.data
    );
}

/// (c) Chromium SIGKILLed mid-takeover: the daemon restarts it on the same profile (the
/// persistent login cookie is still there), `browser_restarted` reaches the platform, the
/// takeover stays live and the viewer goes on showing the desktop.
#[test]
fn chromium_killed_mid_takeover_restarts_with_its_profile() {
    if skip_without_tools() {
        return;
    }
    let _one = serial();
    let site = LoginSite::start();
    let mut d = E2eDaemon::start(&site, None);
    let mut events = d.events();
    let cdp = d.cdp_http();

    // Logged in as dave (a persistent cookie), then made durable: Chromium writes its
    // cookie store every 30 s or after 512 changes; a page on another host makes 700.
    open_tab(&cdp, &format!("{}/login-direct?user=dave", site.url()));
    wait_until("dave's welcome page", LONG, || {
        site.welcomes().contains(&"dave".to_owned()).then_some(())
    });
    open_tab(&cdp, &format!("http://localhost:{}/fill", site.addr.port()));
    let cookies_dir = d.path("profile/Default");
    wait_until("the login cookie on disk", LONG, || {
        let entries = std::fs::read_dir(&cookies_dir).ok()?;
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("Cookies"))
            .any(|e| {
                std::fs::read(e.path())
                    .is_ok_and(|b| b.windows(COOKIE.len()).any(|w| w == COOKIE.as_bytes()))
            })
            .then_some(())
    });

    let id = d.request_takeover("restart check", 120);
    let requested = events.next("takeover_requested", LONG);

    // The kill happens while the viewer is connected: the harness calls this hook.
    let before =
        chromium_pid(d.pid()).unwrap_or_else(|| panic!("no chromium child\n{}", d.diagnostics()));
    let seen: Arc<Mutex<Option<(u32, Value)>>> = Arc::default();
    {
        let (daemon, cdp, socket, id, seen) = (
            d.pid(),
            cdp.clone(),
            d.socket.clone(),
            id.clone(),
            seen.clone(),
        );
        site.set_hook(move || {
            sigkill(before);
            let after = wait_until("chromium to come back", LONG, || {
                let pid = chromium_pid(daemon).filter(|p| *p != before)?;
                let (status, _) = cdp_request(&cdp, "GET", "/json/version").ok()?;
                (status == 200).then_some(pid)
            });
            let state = support::http_unix(&socket, "GET", &format!("/v1/takeovers/{id}"), None)
                .map(|r| r.json())
                .unwrap_or(Value::Null);
            *seen.lock().expect("lock") = Some((after, state));
        });
    }
    let actions = json!([
        {"type": "screenshot", "path": shot("before-kill")},
        {"type": "http", "method": "POST", "url": format!("{}/__hook", site.url())},
        {"type": "wait_pixels"},
        {"type": "screenshot", "path": shot("after-restart")},
        {"type": "complete"},
        {"type": "wait_state", "state": "ended"},
    ]);
    let h = run_harness(
        &d.path("viewer-home"),
        &viewer_url(&requested, "control_token"),
        "restart",
        &actions,
    );
    check_harness(&h, "restart", &d);
    eprintln!("viewer states across the restart: {}", h.result["states"]);
    let (after, state) = seen.lock().expect("lock").clone().expect("the hook ran");
    assert_ne!(after, before);
    assert_eq!(
        state["state"], "live",
        "the takeover after the restart: {state}"
    );
    let restarted = events.next("browser_restarted", LONG);
    assert_eq!(restarted.data["child"], "chromium", "{:?}", restarted.data);
    assert_eq!(
        ended(&h),
        (Some("ended"), Some("completed")),
        "{}",
        h.result
    );
    let end = events.next("takeover_ended", LONG);
    assert_eq!(
        (
            end.data["takeover_id"].as_str(),
            end.data["outcome"].as_str(),
            end.data["by"].as_str()
        ),
        (Some(id.as_str()), Some("completed"), Some("user"))
    );

    // The profile survived: the new Chromium still sends dave's cookie.
    open_tab(&cdp, &format!("{}/whoami", site.url()));
    let who = wait_until("whoami", LONG, || site.whoami().last().cloned());
    assert_eq!(who, "dave", "the login cookie did not survive the restart");
    assert_eq!(d.stop(), 0, "{}", d.diagnostics());
}
