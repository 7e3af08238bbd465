//! "Type text into the sandbox", with the whole stack: the real binary boots a desktop, the
//! test (as the agent) opens a login page in its Chromium and asks for a takeover, and, as the
//! user, opens the viewer in headless Chromium (`tests/e2e/viewer.mjs`), clicks into the
//! password field through the VNC canvas and pastes a generated-looking password into the
//! viewer's own field. CDP then reads the password field in the sandbox: exactly that text,
//! typed key by key (mixed case, digits, symbols that need Shift, a Latin-1 letter), and the
//! canvas has the keyboard again. A text with a tab in it is refused whole. A view-only
//! viewer has no such field. The text is in no log and on no console.
//!
//! Both display backends: each maps keysyms to keys its own way (Xvnc in the server, x11vnc
//! through XTEST, adding a key for a keysym the keymap lacks). Skipped only when chromium,
//! Xvnc, Xvfb, x11vnc, noVNC, node or playwright-core are missing and `CI` is unset.
//! Screenshots: `target/e2e-artifacts/takeover-e2e-type-text-*.png`.

#[path = "support/takeover_e2e.rs"]
#[allow(unused_imports)] // its re-exports are for tests/takeover_e2e.rs
mod e2e;
#[path = "support/login_site.rs"]
mod login_site;
mod support;

use std::time::Duration;

use e2e::*;
use serde_json::{json, Value};
use support::{assert_no_canary, http_tcp};

const LONG: Duration = Duration::from_secs(90);

/// What the user pastes, in two parts (sent with the button, then with Enter): every ASCII
/// symbol, upper and lower case, digits, a space and `é` (Latin-1, which no US keymap has a
/// key for: the server adds one).
const FIRST: &str = "Tr0ub4dor&3!@#$%^*()_+";
const SECOND: &str = "-=[]{};':\",./<>?~`\\| é";

fn shot(name: &str) -> String {
    artifacts()
        .join(format!("takeover-e2e-type-text-{name}.png"))
        .display()
        .to_string()
}

fn types_text_into_the_sandbox(backend: &str) {
    if skip_without_tools() {
        return;
    }
    let _one = serial();
    let site = LoginSite::start();
    let mut d = E2eDaemon::start_as(Mode::Run, &site, None, &["--display-backend", backend]);
    let mut events = d.events();
    // The rest, for a failure's message: where the text went if not to the password field.
    let fields = "[document.getElementById('password').value, \
                  document.activeElement.tagName, document.readyState, \
                  document.activeElement.id, document.hasFocus(), \
                  document.getElementById('username').value]";
    let (cdp, login) = d.open_login_page(&site, fields, LONG);

    let id = d.request_takeover("type text check", 120);
    let requested = events.next("takeover_requested", LONG);
    let home = d.path("viewer-home");

    // A watcher has no field to type with.
    let actions = json!([
        {"type": "screenshot", "path": shot(&format!("{backend}-view-only"))},
    ]);
    let view = run_harness(
        &home,
        &viewer_url(&requested, "view_token"),
        &format!("type-text-{backend}-view-only-end"),
        &actions,
    );
    check_harness(&view, "view-only", &d);
    assert_eq!(view.result["page"]["view_only"], true);
    assert_eq!(
        view.result["page"]["type_text"],
        json!({"visible": false, "enabled": false, "value_length": 0}),
        "{}",
        view.result
    );

    // The user clicks into the password field in the sandbox, pastes and sends with the
    // button, pastes and sends with Enter, then presses Tab: the canvas has the keyboard
    // again, so Tab moves the sandbox's focus on to the form's button.
    let actions = json!([
        {"type": "click", "x": PASSWORD_AT.0, "y": PASSWORD_AT.1},
        {"type": "type_text", "text": FIRST, "submit": "click"},
        {"type": "type_text", "text": SECOND},
        {"type": "press", "key": "Tab"},
        // For the screenshot only: the desktop's next frames show what was typed.
        {"type": "pause", "ms": 1000},
        {"type": "screenshot", "path": shot(&format!("{backend}-typed"))},
    ]);
    let control = run_harness(
        &home,
        &viewer_url(&requested, "control_token"),
        &format!("type-text-{backend}-control-end"),
        &actions,
    );
    check_harness(&control, "control", &d);
    let typed = control.result["page"]["type_text"].clone();
    assert_eq!(
        typed,
        json!({"visible": true, "enabled": true, "value_length": 0}),
        "the field is not emptied after typing: {}",
        control.result
    );
    assert_eq!(
        control.result["page"]["focus"], "canvas",
        "{}",
        control.result
    );
    let want = format!("{FIRST}{SECOND}");
    let end = std::time::Instant::now() + LONG;
    let last: Value = loop {
        let now = evaluate(&cdp, &login, fields);
        if now[0] == want.as_str() && now[1] == "BUTTON" {
            break now;
        }
        // The field's text is what the test typed, so printing it leaks nothing real.
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for the typed text in the sandbox's field: [value, focus, \
             readyState, focused id, page focused, username] = {now}, want {want:?} and BUTTON\nthe viewer: {}\n{}",
            control.result,
            d.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    // Still the login page: no Enter reached the sandbox's form.
    assert!(
        pages(&cdp).iter().any(|p| p["url"] == login.as_str()),
        "the form was submitted: {last}"
    );

    // A text with a tab in it is refused whole: nothing typed, the text left in the field.
    let actions = json!([{"type": "type_text", "text": "Bad\tTab"}]);
    let refused = run_harness(
        &home,
        &viewer_url(&requested, "control_token"),
        &format!("type-text-{backend}-refused-end"),
        &actions,
    );
    check_harness(&refused, "refused", &d);
    let page = &refused.result["page"];
    assert_eq!(page["type_text"]["value_length"], 7, "{}", refused.result);
    assert_eq!(page["focus"], "type-text-input", "{}", refused.result);
    assert!(
        page["toast"]
            .as_str()
            .is_some_and(|t| t.contains("tab or line break")),
        "{}",
        refused.result
    );
    assert_eq!(evaluate(&cdp, &login, fields)[0], want.as_str());

    let cancel = http_tcp(
        d.control,
        "POST",
        &format!("/v1/takeovers/{id}/cancel"),
        Some(&d.token),
        None,
    )
    .expect("cancel");
    assert_eq!(cancel.status, 200);
    assert_eq!(d.stop(), 0, "{}", d.diagnostics());
    let console: Vec<&str> = control.result["console_messages"]
        .as_array()
        .expect("console messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    let console = console.join("\n");
    for (what, text) in [
        ("the viewer page's console", console),
        ("the log", d.log_text()),
    ] {
        assert_no_canary(what, &text, &[FIRST, SECOND, "Tr0ub4dor"]);
    }
}

#[test]
fn text_typed_through_the_viewer_reaches_the_page_on_xvnc() {
    types_text_into_the_sandbox("xvnc");
}

#[test]
fn text_typed_through_the_viewer_reaches_the_page_on_x11vnc() {
    types_text_into_the_sandbox("xvfb");
}
