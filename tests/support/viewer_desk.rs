//! What the viewer's browser tests share: a real Xvnc showing a window and a home for the
//! headless browser ([`desk`]), where screenshots go, and reading the harness's result.
#![allow(dead_code)]

use serde_json::json;

use crate::viewer_support::*;

pub const NOVNC_RFB: &str = "/usr/share/novnc/core/rfb.js";

pub fn shot(name: &str) -> std::path::PathBuf {
    artifacts().join(format!("viewer-{name}.png"))
}

pub fn assert_ok(h: &Harness, what: &str) {
    assert!(h.ok, "{what}: harness failed: {}\n{}", h.stderr, h.result);
    assert_eq!(
        h.result["csp_violations"],
        json!([]),
        "{what}: CSP violations: {}",
        h.result
    );
}

pub fn states(h: &Harness) -> Vec<String> {
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
pub struct Desk {
    pub dir: tempfile::TempDir,
    pub home: std::path::PathBuf,
    pub x: Xvnc,
    pub xmsg: usize,
}

/// Starts a [`Desk`]; `None` when a tool (the common ones and `extra`) is missing outside CI.
/// Blocks: call from a multi-thread runtime.
pub fn desk(text: &str, extra: &[&str]) -> Option<Desk> {
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
