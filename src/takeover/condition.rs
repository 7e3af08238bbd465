//! The success condition: "the login worked" seen from the browser, so the user need not
//! press a button. A page URL matching a glob, and/or a cookie of a given name for a
//! domain; with both, both must hold.
//!
//! Checked by polling over CDP (every `condition_poll`, ~200 ms): `Target.getTargets`
//! filtered on `type == "page"` (the omnibox popup and workers are other types) — the
//! same list `/json/list` serves, over the connection we hold anyway — and
//! `Storage.getCookies`. The CDP connection is kept between polls and rebuilt when the
//! endpoint changes (Chromium restarted) or a call fails.
//!
//! Cookie values pass through our memory (CDP has no "names only" call); they are never
//! logged or kept beyond one poll.

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::target::GetTargetsParams;
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tracing::{debug, Instrument};

use super::Browser;
use crate::desktop::DesktopStatus;

/// Each CDP call (and the connection) of one poll gets at most this long.
const CDP_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A whole-string glob where `*` matches any run of characters (including none and
/// including `/`); every other character is literal. Matching is linear: the pattern is
/// split at `*`, the first piece must be a prefix, the last a suffix, and the middle
/// pieces are found left to right (the leftmost occurrence is always the best choice
/// when `*` is the only wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pieces: Vec<String>,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Self {
            pieces: pattern.split('*').map(str::to_owned).collect(),
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        // `split` always yields at least one piece.
        let (first, rest) = match self.pieces.split_first() {
            Some(split) => split,
            None => return text.is_empty(),
        };
        let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            // No `*` at all: exact match.
            return remaining.is_empty();
        };
        for piece in middle {
            match remaining.find(piece.as_str()) {
                Some(at) => remaining = &remaining[at + piece.len()..],
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last.as_str())
    }
}

/// A cookie named `name` set for `domain` or a subdomain of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieCondition {
    pub name: String,
    pub domain: String,
}

impl CookieCondition {
    /// `cookie_domain` as CDP reports it: `example.com` (host-only) or `.example.com`.
    /// Matches when equal to ours (case-insensitive, leading dots ignored) or a subdomain
    /// of ours (dot-suffix). A parent domain does not match: a cookie for `example.com`
    /// does not prove a login on `accounts.example.com`.
    pub fn matches(&self, cookie_name: &str, cookie_domain: &str) -> bool {
        if cookie_name != self.name {
            return false;
        }
        let want = self.domain.trim_start_matches('.').to_ascii_lowercase();
        let have = cookie_domain.trim_start_matches('.').to_ascii_lowercase();
        if want.is_empty() {
            return false;
        }
        have == want || have.ends_with(&format!(".{want}"))
    }
}

/// What must hold for the takeover to complete by itself. At least one part is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessCondition {
    pub url_pattern: Option<Glob>,
    pub cookie: Option<CookieCondition>,
}

impl SuccessCondition {
    /// Whether the condition holds for these page URLs and cookies (name, domain).
    pub fn holds<'a>(
        &self,
        page_urls: impl IntoIterator<Item = &'a str>,
        cookies: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> bool {
        let url_ok = match &self.url_pattern {
            None => true,
            Some(glob) => page_urls.into_iter().any(|url| glob.matches(url)),
        };
        let cookie_ok = match &self.cookie {
            None => true,
            Some(want) => cookies
                .into_iter()
                .any(|(name, domain)| want.matches(name, domain)),
        };
        url_ok && cookie_ok
    }
}

/// A CDP connection whose handler task ends with it.
struct Cdp {
    ws_url: String,
    browser: chromiumoxide::Browser,
    handler: JoinHandle<()>,
}

impl Drop for Cdp {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("CDP call failed")]
    Cdp(#[source] chromiumoxide::error::CdpError),
    #[error("CDP call timed out")]
    Timeout,
}

async fn connect(ws_url: &str) -> Result<Cdp, PollError> {
    let (browser, mut handler) =
        tokio::time::timeout(CDP_CALL_TIMEOUT, chromiumoxide::Browser::connect(ws_url))
            .await
            .map_err(|_| PollError::Timeout)?
            .map_err(PollError::Cdp)?;
    let handler = tokio::spawn(
        async move {
            // The handler must be polled for commands to progress; per-message errors
            // (events newer than chromiumoxide's protocol) are not fatal.
            while let Some(event) = handler.next().await {
                if let Err(error) = event {
                    tracing::trace!(%error, "cdp handler");
                }
            }
        }
        .instrument(tracing::trace_span!("condition_cdp")),
    );
    Ok(Cdp {
        ws_url: ws_url.to_owned(),
        browser,
        handler,
    })
}

async fn call<T>(
    f: impl std::future::Future<Output = Result<T, chromiumoxide::error::CdpError>>,
) -> Result<T, PollError> {
    tokio::time::timeout(CDP_CALL_TIMEOUT, f)
        .await
        .map_err(|_| PollError::Timeout)?
        .map_err(PollError::Cdp)
}

async fn check(cdp: &Cdp, condition: &SuccessCondition) -> Result<bool, PollError> {
    let mut urls = Vec::new();
    if condition.url_pattern.is_some() {
        let targets = call(cdp.browser.execute(GetTargetsParams::default())).await?;
        urls = targets
            .result
            .target_infos
            .into_iter()
            .filter(|t| t.r#type == "page")
            .map(|t| t.url)
            .collect();
    }
    let mut cookies = Vec::new();
    if condition.cookie.is_some() {
        // Keep names and domains only; the values are dropped here.
        cookies = call(cdp.browser.get_cookies())
            .await?
            .into_iter()
            .map(|c| (c.name, c.domain))
            .collect();
    }
    Ok(condition.holds(
        urls.iter().map(String::as_str),
        cookies
            .iter()
            .map(|(n, d): &(String, String)| (n.as_str(), d.as_str())),
    ))
}

/// Polls until the condition holds, then returns. Never returns otherwise: the caller
/// drops this future when the takeover ends. Polls only while the desktop is `Ready`.
pub(crate) async fn wait_until_met(
    condition: &SuccessCondition,
    browser: &dyn Browser,
    poll: Duration,
) {
    let status = browser.status();
    let mut cdp: Option<Cdp> = None;
    let mut interval = tokio::time::interval(poll);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures: u64 = 0;
    loop {
        interval.tick().await;
        if *status.borrow() != DesktopStatus::Ready {
            cdp = None;
            continue;
        }
        let ws_url = browser.cdp().ws_url;
        if cdp.as_ref().is_none_or(|c| c.ws_url != ws_url) {
            cdp = match connect(&ws_url).await {
                Ok(c) => Some(c),
                Err(error) => {
                    failures += 1;
                    // Every poll would log while Chromium restarts; log the first of a run.
                    if failures == 1 {
                        debug!(%error, "condition: cannot connect to CDP");
                    }
                    continue;
                }
            };
        }
        let Some(conn) = cdp.as_ref() else { continue };
        match check(conn, condition).await {
            Ok(true) => return,
            Ok(false) => failures = 0,
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    debug!(%error, "condition: CDP poll failed");
                }
                cdp = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let table: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything/at/all?x=1", true),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("abc", "xabc", false),
            ("https://example.com/", "https://example.com/", true),
            ("https://example.com/*", "https://example.com/", true),
            (
                "https://example.com/*",
                "https://example.com/home?a=b",
                true,
            ),
            (
                "https://example.com/*",
                "https://example.com.evil.net/",
                false,
            ),
            ("https://example.com/*", "http://example.com/x", false),
            (
                "https://*.example.com/dashboard*",
                "https://app.example.com/dashboard",
                true,
            ),
            (
                "https://*.example.com/dashboard*",
                "https://app.example.com/dashboard/x",
                true,
            ),
            (
                "https://*.example.com/dashboard*",
                "https://example.com/dashboard",
                false,
            ),
            ("*/done", "https://x/done", true),
            ("*/done", "https://x/done/", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXcYb", false),
            ("a*b*c", "abcb", false),
            ("a*b*c", "abcbc", true),
            ("a**b", "ab", true),
            ("ab*ab", "ab", false),
            ("ab*ab", "abab", true),
            ("a*a", "a", false),
            ("?", "?", true),
            ("?", "a", false),
            ("[a]", "a", false),
            ("é*", "éa", true),
        ];
        for (pattern, text, want) in table {
            assert_eq!(
                Glob::new(pattern).matches(text),
                *want,
                "{pattern:?} ~ {text:?}"
            );
        }
    }

    #[test]
    fn glob_is_linear_on_adversarial_input() {
        let text = "a".repeat(1 << 20);
        let pattern = format!("{}b", "a*".repeat(1000));
        let started = std::time::Instant::now();
        assert!(!Glob::new(&pattern).matches(&text));
        // Generous: a backtracking matcher would take hours here.
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn cookie_domain_table() {
        let want = CookieCondition {
            name: "session".into(),
            domain: "example.com".into(),
        };
        let table: &[(&str, &str, bool)] = &[
            ("session", "example.com", true),
            ("session", ".example.com", true),
            ("session", "EXAMPLE.com", true),
            ("session", "app.example.com", true),
            ("session", ".app.example.com", true),
            ("session", "badexample.com", false),
            ("session", "example.com.evil", false),
            ("session", "com", false),
            ("Session", "example.com", false),
            ("other", "example.com", false),
            ("session", "", false),
        ];
        for (name, domain, expected) in table {
            assert_eq!(want.matches(name, domain), *expected, "{name} @ {domain}");
        }
        let dotted = CookieCondition {
            name: "s".into(),
            domain: ".example.com".into(),
        };
        assert!(dotted.matches("s", "example.com"));
        let empty = CookieCondition {
            name: "s".into(),
            domain: "".into(),
        };
        assert!(!empty.matches("s", ""));
    }

    #[test]
    fn condition_needs_every_part() {
        let both = SuccessCondition {
            url_pattern: Some(Glob::new("https://x/done*")),
            cookie: Some(CookieCondition {
                name: "s".into(),
                domain: "x".into(),
            }),
        };
        assert!(both.holds(["about:blank", "https://x/done"], [("s", "x")]));
        assert!(!both.holds(["https://x/done"], [("t", "x")]));
        assert!(!both.holds(["https://x/login"], [("s", "x")]));
        let url_only = SuccessCondition {
            url_pattern: Some(Glob::new("*/ok")),
            cookie: None,
        };
        assert!(url_only.holds(["http://127.0.0.1/ok"], []));
        assert!(!url_only.holds([], []));
    }
}
