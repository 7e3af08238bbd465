//! The success condition: "the login worked" seen from the browser, so the user need not
//! press a button. A page URL matching a glob that the browser *reaches*, and/or a cookie of
//! a given name for a domain that *appears*; with both, both must hold.
//!
//! "Reaches" and "appears" are measured against the first poll (the baseline): a page
//! already at a matching URL, or a matching cookie already set with the same value, when
//! the takeover starts proves nothing — a login page on the dashboard's URL, a stale
//! session cookie in the persistent profile, the pre-login session cookie a login page sets.
//! A matching URL no page showed at the baseline, a matching cookie that was not there or
//! whose value changed (a login rotates the session), does. A login that changes neither is
//! completed by the user's button.
//!
//! Checked by polling over CDP (every `condition_poll`, ~200 ms): `Target.getTargets`
//! filtered on `type == "page"` (the omnibox popup and workers are other types) — the
//! same list `/json/list` serves, over the connection we hold anyway — and
//! `Storage.getCookies`. The CDP connection is kept between polls and rebuilt when the
//! endpoint changes (Chromium restarted) or a call fails.
//!
//! Cookie values pass through our memory (CDP has no "names only" call); they are never
//! logged (chromiumoxide and tungstenite would log every CDP response whole at trace;
//! `telemetry::PAYLOAD_CAPS` holds them at info), and of a matching cookie only a salted
//! SHA-256 of its value is kept, for the takeover's life, to see it change.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::target::GetTargetsParams;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tracing::{debug, Instrument};

use super::Browser;
use crate::desktop::DesktopStatus;

/// Each CDP call (and the connection) of one poll gets at most this long.
const CDP_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A whole-URL glob where `*` matches any run of characters (including none); every other
/// character is literal.
///
/// A pattern that starts with a scheme (`https://`, or `*://`) is matched in two parts, like
/// the URL: scheme and host (up to the first `/`, `?` or `#` after `://`), then the rest. So a
/// `*` in the host matches within the host only: `https://*.example.com/dashboard*` does not
/// match `https://idp.test/login?next=https://app.example.com/dashboard`, which a
/// single-part glob would (the user still on the identity provider's login form). A pattern
/// with nothing after its host matches only that origin with an empty path: write
/// `https://bank.example/*`, not `https://bank.example*` (which would also match
/// `https://bank.example.evil.net`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// `(scheme and host, rest)` for a URL-shaped pattern; `(whole, None)` otherwise.
    origin: Pieces,
    rest: Option<Pieces>,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        match split_origin(pattern).filter(|_| starts_with_scheme(pattern)) {
            Some((origin, rest)) => Self {
                origin: Pieces::new(origin),
                rest: Some(Pieces::new(rest)),
            },
            None => Self {
                origin: Pieces::new(pattern),
                rest: None,
            },
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        match &self.rest {
            None => self.origin.matches(text),
            Some(rest) => {
                let (origin, path) = split_origin(text).unwrap_or((text, ""));
                self.origin.matches(origin) && rest.matches(path)
            }
        }
    }
}

/// `scheme:` then `//`, the scheme made of letters, digits, `+`, `-`, `.` (RFC 3986) or `*`.
fn starts_with_scheme(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '*'))
    })
}

/// Splits after the host: at the first `/`, `?` or `#` after the first `://`.
fn split_origin(s: &str) -> Option<(&str, &str)> {
    let host_at = s.find("://")? + 3;
    let end = s[host_at..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| host_at + i);
    Some(s.split_at(end))
}

/// A glob split at `*`. Matching is linear: the first piece must be a prefix, the last a
/// suffix, and the middle pieces are found left to right (the leftmost occurrence is always
/// the best choice when `*` is the only wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pieces(Vec<String>);

impl Pieces {
    fn new(pattern: &str) -> Self {
        Self(pattern.split('*').map(str::to_owned).collect())
    }

    fn matches(&self, text: &str) -> bool {
        // `split` always yields at least one piece.
        let (first, rest) = match self.0.split_first() {
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

/// One cookie as a poll sees it: where it lives and a salted digest of its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeenCookie {
    pub name: String,
    pub domain: String,
    pub path: String,
    pub value_digest: [u8; 32],
}

/// What one poll saw that matches the condition: page URLs and cookies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sighting {
    urls: HashSet<String>,
    /// `(name, domain, path)` → value digest.
    cookies: HashMap<(String, String, String), [u8; 32]>,
}

impl SuccessCondition {
    /// Keeps, of what a poll saw, what matches this condition.
    pub fn sight<'a>(
        &self,
        page_urls: impl IntoIterator<Item = &'a str>,
        cookies: impl IntoIterator<Item = SeenCookie>,
    ) -> Sighting {
        let urls = match &self.url_pattern {
            None => HashSet::new(),
            Some(glob) => page_urls
                .into_iter()
                .filter(|url| glob.matches(url))
                .map(str::to_owned)
                .collect(),
        };
        let cookies = match &self.cookie {
            None => HashMap::new(),
            Some(want) => cookies
                .into_iter()
                .filter(|c| want.matches(&c.name, &c.domain))
                .map(|c| ((c.name, c.domain, c.path), c.value_digest))
                .collect(),
        };
        Sighting { urls, cookies }
    }

    /// Whether `now` shows the condition met since `baseline`: a matching URL no page had
    /// then, and/or a matching cookie that was not there or has another value.
    pub fn met_since(&self, baseline: &Sighting, now: &Sighting) -> bool {
        let url_ok =
            self.url_pattern.is_none() || now.urls.iter().any(|url| !baseline.urls.contains(url));
        let cookie_ok = self.cookie.is_none()
            || now
                .cookies
                .iter()
                .any(|(key, digest)| baseline.cookies.get(key) != Some(digest));
        url_ok && cookie_ok
    }
}

/// A salted SHA-256 of a cookie value: enough to see it change, useless to anyone reading
/// memory for the value (the salt is random per takeover).
fn value_digest(salt: &[u8; 16], value: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(value.as_bytes());
    h.finalize().into()
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

async fn sight(
    cdp: &Cdp,
    condition: &SuccessCondition,
    salt: &[u8; 16],
) -> Result<Sighting, PollError> {
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
        // The values are digested and dropped here.
        cookies = call(cdp.browser.get_cookies())
            .await?
            .into_iter()
            .map(|c| SeenCookie {
                value_digest: value_digest(salt, &c.value),
                name: c.name,
                domain: c.domain,
                path: c.path,
            })
            .collect();
    }
    Ok(condition.sight(urls.iter().map(String::as_str), cookies))
}

/// Polls until the condition is met since the first poll, then returns. Never returns otherwise: the caller
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
    let salt: [u8; 16] = rand::random();
    // The first successful poll: what was there before the user did anything.
    let mut baseline: Option<Sighting> = None;
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
        match sight(conn, condition, &salt).await {
            Ok(now) => {
                failures = 0;
                match &baseline {
                    None => baseline = Some(now),
                    Some(before) if condition.met_since(before, &now) => return,
                    Some(_) => {}
                }
            }
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
            // A `*` in the host stays in the host.
            (
                "https://*.example.com/dashboard*",
                "https://accounts.idp.test/signin?continue=https://app.example.com/dashboard",
                false,
            ),
            (
                "https://*.example.com/*",
                "https://evil.test/.example.com/",
                false,
            ),
            (
                "https://*.example.com/*",
                "https://evil.test?.example.com/",
                false,
            ),
            (
                "https://*.example.com/*",
                "https://evil.test#.example.com/",
                false,
            ),
            ("https://*.example.com/*", "https://a.b.example.com/x", true),
            ("*://bank.example/*", "https://bank.example/acct", true),
            (
                "*://bank.example/*",
                "https://evil.test/?u=https://bank.example/x",
                false,
            ),
            // Nothing after the host: that origin with an empty path only.
            (
                "https://bank.example*",
                "https://bank.example.evil.net/",
                false,
            ),
            ("https://bank.example*", "https://bank.example/acct", false),
            ("https://bank.example", "https://bank.example", true),
            ("https://x/*?done=1", "https://x/a/b?done=1", true),
            ("https://x?*", "https://x?a", true),
            ("https://*/done", "https://x/done", true),
            ("https://*/done", "about:blank", false),
            // Not URL-shaped: one whole-string glob.
            ("*bank.example*", "https://evil/?bank.example", true),
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

    fn cookie(name: &str, domain: &str, value: &str) -> SeenCookie {
        SeenCookie {
            name: name.into(),
            domain: domain.into(),
            path: "/".into(),
            value_digest: value_digest(&[9; 16], value),
        }
    }

    #[test]
    fn condition_needs_every_part_to_appear_since_the_baseline() {
        let both = SuccessCondition {
            url_pattern: Some(Glob::new("https://x/done*")),
            cookie: Some(CookieCondition {
                name: "s".into(),
                domain: "x".into(),
            }),
        };
        let before = both.sight(["https://x/login"], []);
        let met = |urls: &[&str], cookies: Vec<SeenCookie>| {
            both.met_since(&before, &both.sight(urls.iter().copied(), cookies))
        };
        assert!(met(
            &["about:blank", "https://x/done"],
            vec![cookie("s", "x", "1")]
        ));
        assert!(!met(&["https://x/done"], vec![cookie("t", "x", "1")]));
        assert!(!met(&["https://x/login"], vec![cookie("s", "x", "1")]));
        let url_only = SuccessCondition {
            url_pattern: Some(Glob::new("*/ok")),
            cookie: None,
        };
        let empty = url_only.sight([], []);
        assert!(url_only.met_since(&empty, &url_only.sight(["http://127.0.0.1/ok"], [])));
        assert!(!url_only.met_since(&empty, &url_only.sight([], [])));
    }

    #[test]
    fn what_was_there_at_the_start_proves_nothing() {
        let cond = SuccessCondition {
            url_pattern: None,
            cookie: Some(CookieCondition {
                name: "session".into(),
                domain: "bank.example".into(),
            }),
        };
        // A stale session cookie in the profile, or the pre-login one a login page sets.
        let before = cond.sight([], [cookie("session", "bank.example", "anon")]);
        let same = cond.sight([], [cookie("session", ".bank.example", "anon")]);
        assert!(
            cond.met_since(&before, &same),
            "another domain key is a new cookie"
        );
        let unchanged = cond.sight([], [cookie("session", "bank.example", "anon")]);
        assert!(!cond.met_since(&before, &unchanged));
        // The login rotates the session: its value changes.
        let rotated = cond.sight([], [cookie("session", "bank.example", "user-42")]);
        assert!(cond.met_since(&before, &rotated));
        // A cookie of another site appearing proves nothing.
        let other = cond.sight(
            [],
            [
                cookie("session", "bank.example", "anon"),
                cookie("session", "other.example", "x"),
            ],
        );
        assert!(!cond.met_since(&before, &other));

        let url = SuccessCondition {
            url_pattern: Some(Glob::new("https://bank.example/account*")),
            cookie: None,
        };
        // A tab already on the account page (showing the login form) at the start.
        let before = url.sight(["https://bank.example/account"], []);
        assert!(!url.met_since(&before, &url.sight(["https://bank.example/account"], [])));
        assert!(url.met_since(
            &before,
            &url.sight(["https://bank.example/account?welcome=1"], [])
        ));
    }

    #[test]
    fn the_digest_is_salted_and_keeps_no_value() {
        let a = value_digest(&[1; 16], "secret-value");
        assert_ne!(a, value_digest(&[2; 16], "secret-value"));
        assert_ne!(a, value_digest(&[1; 16], "secret-valuf"));
        let seen = format!("{:?}", cookie("s", "x", "secret-value"));
        assert!(!seen.contains("secret-value"));
    }
}
