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
//! A baseline cookie that goes away is not a login either, and neither is its return: a
//! Chromium restarted mid-takeover has dropped every session cookie, and the login page,
//! reloaded, hands out a fresh pre-login value that differs from the baseline's. So when
//! the browser restarted (its CDP endpoint changed, or the desktop left `Ready`) every
//! baseline cookie, and otherwise each baseline cookie a poll did not see, is *stale*: the
//! next value seen for it becomes its baseline instead of counting ([`Baseline`]). A cookie
//! that was never in the baseline still counts when it appears, restart or not, and without
//! a restart a rotated value still counts. The price: a login that deletes the cookie and
//! sets it again in two steps a poll apart is left to the user's button.
//!
//! Checked by polling over CDP (every `condition_poll`, ~200 ms): `Target.getTargets`
//! filtered on `type == "page"` (the omnibox popup and workers are other types) — the
//! same list `/json/list` serves, over the connection we hold anyway — and
//! `Storage.getCookies` of the default browser context and of every other one
//! (`Target.getBrowserContexts`: Playwright's `browser.new_context()` over
//! `connect_over_cdp` logs in in one of those), the context, like a partitioned cookie's
//! partition, being part of a cookie's identity. A context closed between the listing and the reading of its cookies is
//! skipped for that poll, not a failed poll. The CDP connection is kept between polls and rebuilt when the endpoint
//! changes (Chromium restarted) or a call fails.
//!
//! Cookie values pass through our memory (CDP has no "names only" call); they are never
//! logged (chromiumoxide and tungstenite would log every CDP response whole at trace;
//! `telemetry::PAYLOAD_CAPS` holds them at info), and of a matching cookie only a salted
//! SHA-256 of its value is kept, for the takeover's life, to see it change.
//!
//! What a pattern and a cookie domain are matched with, and how the API brings them to the
//! form Chromium reports, is in `matching`.

#[cfg(test)]
mod cdp_tests;
mod matching;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::network::Cookie;
use chromiumoxide::cdp::browser_protocol::storage::GetCookiesParams;
use chromiumoxide::cdp::browser_protocol::target::{GetBrowserContextsParams, GetTargetsParams};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tracing::{debug, trace, Instrument};

use super::Browser;
use crate::desktop::DesktopStatus;
pub use matching::{normalise_cookie_domain, CookieCondition, Glob, Unmatchable};

/// Each CDP call (and the connection) of one poll gets at most this long.
const CDP_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What must hold for the takeover to complete by itself. At least one part is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessCondition {
    pub url_pattern: Option<Glob>,
    pub cookie: Option<CookieCondition>,
}

/// One cookie as a poll sees it: where it lives and a salted digest of its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeenCookie {
    /// The browser context's id; empty for the default context.
    pub context: String,
    pub name: String,
    pub domain: String,
    pub path: String,
    pub partition: Partition,
    pub value_digest: [u8; 32],
}

/// A partitioned cookie's partition (CHIPS: set with `Partitioned`, kept per top-level
/// site). The same name, domain and path in two partitions are two cookies, each with its
/// own value: under one key, either could hide the other's change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Partition {
    /// Not partitioned.
    #[default]
    None,
    /// CDP's `partitionKey`.
    Site {
        top_level_site: String,
        cross_site_ancestor: bool,
    },
    /// `partitionKeyOpaque`: a partition CDP cannot name (an opaque top-level origin).
    Opaque,
}

impl Partition {
    fn of(cookie: &Cookie) -> Partition {
        match (&cookie.partition_key, cookie.partition_key_opaque) {
            (Some(key), _) => Partition::Site {
                top_level_site: key.top_level_site.clone(),
                cross_site_ancestor: key.has_cross_site_ancestor,
            },
            (None, Some(true)) => Partition::Opaque,
            (None, _) => Partition::None,
        }
    }
}

/// What one poll saw that matches the condition: page URLs and cookies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sighting {
    urls: HashSet<String>,
    cookies: HashMap<CookieKey, [u8; 32]>,
}

/// A cookie's identity: where it lives and what names it, all but its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CookieKey {
    context: String,
    name: String,
    domain: String,
    path: String,
    partition: Partition,
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
                .map(|c| {
                    let key = CookieKey {
                        context: c.context,
                        name: c.name,
                        domain: c.domain,
                        path: c.path,
                        partition: c.partition,
                    };
                    (key, c.value_digest)
                })
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

/// The baseline as it follows the browser: the first poll, with each stale cookie's
/// baseline replaced by the next value seen for it (see the module docs).
#[derive(Debug, Default)]
pub struct Baseline {
    /// `None` until the first poll.
    base: Option<Sighting>,
    /// Baseline cookies whose next value seen becomes their baseline, not evidence.
    stale: HashSet<CookieKey>,
}

impl Baseline {
    /// Takes one poll's sighting; true when it shows `condition` met. `restarted`: the
    /// browser restarted since the previous poll.
    pub fn met(&mut self, condition: &SuccessCondition, now: &Sighting, restarted: bool) -> bool {
        let Some(base) = &mut self.base else {
            self.base = Some(now.clone());
            return false;
        };
        if restarted {
            self.stale.extend(base.cookies.keys().cloned());
        }
        for (key, digest) in &now.cookies {
            if self.stale.remove(key) {
                base.cookies.insert(key.clone(), *digest);
            }
        }
        self.stale.extend(
            base.cookies
                .keys()
                .filter(|key| !now.cookies.contains_key(*key))
                .cloned(),
        );
        condition.met_since(base, now)
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

/// The ids of the browser contexts other than the default one.
async fn browser_contexts(cdp: &Cdp) -> Result<Vec<String>, PollError> {
    let got = call(cdp.browser.execute(GetBrowserContextsParams::default())).await?;
    Ok(got
        .result
        .browser_context_ids
        .into_iter()
        .map(|id| id.inner().clone())
        .collect())
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
        // Every context's cookies at once: the cookie half of a poll costs two round trips
        // whatever the number of contexts, and each call keeps its own CDP_CALL_TIMEOUT.
        let contexts = browser_contexts(cdp).await?;
        let default = std::iter::once((String::new(), GetCookiesParams::default()));
        let others = contexts.into_iter().map(|id| {
            (
                id.clone(),
                GetCookiesParams::builder()
                    .browser_context_id(BrowserContextId::new(id))
                    .build(),
            )
        });
        let per_context = futures_util::future::join_all(default.chain(others).map(
            |(context, params)| async move { (context, call(cdp.browser.execute(params)).await) },
        ))
        .await;
        let mut failed = Vec::new();
        for (context, got) in per_context {
            match got {
                // The values are digested and dropped here.
                Ok(got) => cookies.extend(got.result.cookies.into_iter().map(|c| SeenCookie {
                    value_digest: value_digest(salt, &c.value),
                    partition: Partition::of(&c),
                    context: context.clone(),
                    name: c.name,
                    domain: c.domain,
                    path: c.path,
                })),
                Err(error) if context.is_empty() => return Err(error),
                Err(error) => failed.push((context, error)),
            }
        }
        if !failed.is_empty() {
            // A context closed between the listing and its read (an agent's
            // `context.close()`) has no cookies left to prove a login: skipped, the others
            // still count. One still listed failed for another reason: the poll fails.
            let listed = browser_contexts(cdp).await?;
            for (context, error) in failed {
                if listed.contains(&context) {
                    return Err(error);
                }
                debug!("condition: a browser context closed during the poll; skipped");
            }
        }
    }
    Ok(condition.sight(urls.iter().map(String::as_str), cookies))
}

/// Polls until the condition is met since the baseline, then returns. Never returns
/// otherwise: the caller drops this future when the takeover ends. Polls only while the
/// desktop is `Ready`.
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
    let mut baseline = Baseline::default();
    // The endpoint of the last successful poll, and whether the desktop left `Ready` since:
    // either way the browser restarted in between and its session cookies are gone.
    let mut polled: Option<String> = None;
    let mut left_ready = false;
    loop {
        interval.tick().await;
        if *status.borrow() != DesktopStatus::Ready {
            cdp = None;
            left_ready = true;
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
                let restarted =
                    left_ready || polled.as_ref().is_some_and(|before| *before != conn.ws_url);
                if restarted {
                    debug!("condition: the browser restarted; its cookies are rebaselined");
                }
                left_ready = false;
                polled = Some(conn.ws_url.clone());
                let met = baseline.met(condition, &now, restarted);
                // Counts only, never a value. The real-desktop tests wait on this line to
                // know a poll has seen what they did.
                trace!(
                    urls = now.urls.len(),
                    cookies = now.cookies.len(),
                    met,
                    "condition polled"
                );
                if met {
                    return;
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

    fn cookie(name: &str, domain: &str, value: &str) -> SeenCookie {
        SeenCookie {
            context: String::new(),
            name: name.into(),
            domain: domain.into(),
            path: "/".into(),
            partition: Partition::None,
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

    use super::cdp_tests::session_condition;

    /// One poll: whether the browser restarted before it, and the `session` cookie's value
    /// (`None`: absent).
    type Poll<'a> = (bool, Option<&'a str>);

    /// Feeds `polls` to a baseline; the index of the first poll that met it.
    fn first_met(polls: &[Poll]) -> Option<usize> {
        let cond = session_condition();
        let mut baseline = Baseline::default();
        polls.iter().position(|(restarted, value)| {
            let cookies = value.map(|v| cookie("session", "bank.example", v));
            baseline.met(&cond, &cond.sight([], cookies), *restarted)
        })
    }

    #[test]
    fn a_restart_or_a_vanished_cookie_rebaselines_it() {
        let table: &[(&[Poll], Option<usize>)] = &[
            // Without a restart, a rotated value is a login.
            (
                &[
                    (false, Some("anon")),
                    (false, Some("anon")),
                    (false, Some("user")),
                ],
                Some(2),
            ),
            // A restarted Chromium dropped the session cookie; the login page hands out a
            // fresh pre-login value: not a login. The login after it is.
            (
                &[
                    (false, Some("anon-1")),
                    (true, None),
                    (false, Some("anon-2")),
                    (false, Some("anon-2")),
                    (false, Some("user")),
                ],
                Some(4),
            ),
            // The first poll after the restart already holds the fresh value.
            (
                &[
                    (false, Some("anon-1")),
                    (true, Some("anon-2")),
                    (false, Some("user")),
                ],
                Some(2),
            ),
            // A persistent cookie that survives the restart, then rotates.
            (
                &[
                    (false, Some("anon")),
                    (true, Some("anon")),
                    (false, Some("user")),
                ],
                Some(2),
            ),
            // Gone from one poll without a restart (cleared, or a restart in between
            // polls): its next value is its baseline.
            (
                &[
                    (false, Some("anon-1")),
                    (false, None),
                    (false, Some("anon-2")),
                ],
                None,
            ),
            (
                &[
                    (false, Some("anon-1")),
                    (false, None),
                    (false, Some("anon-2")),
                    (false, Some("user")),
                ],
                Some(3),
            ),
            // A cookie absent from the baseline counts when it appears, restart or not.
            (
                &[(false, None), (true, None), (false, Some("user"))],
                Some(2),
            ),
            (&[(false, None), (false, Some("user"))], Some(1)),
        ];
        for (polls, want) in table {
            assert_eq!(first_met(polls), *want, "{polls:?}");
        }
    }

    #[test]
    fn a_cookie_in_another_browser_context_is_another_cookie() {
        let cond = session_condition();
        let mut baseline = Baseline::default();
        let anon = cookie("session", "bank.example", "anon");
        assert!(!baseline.met(&cond, &cond.sight([], [anon.clone()]), false));
        // The same name, domain, path and value, in a context Playwright made.
        let in_context = SeenCookie {
            context: "CTX1".into(),
            ..anon.clone()
        };
        assert!(baseline.met(&cond, &cond.sight([], [anon, in_context]), false));
    }

    /// Two partitions of one cookie (CHIPS), under two top-level sites: a login that
    /// rotates the one is seen whatever the other holds, and a partitioned cookie is not
    /// the unpartitioned one of the same name.
    #[test]
    fn a_cookie_in_another_partition_is_another_cookie() {
        let cond = session_condition();
        let partitioned = |site: &str, value: &str| SeenCookie {
            partition: Partition::Site {
                top_level_site: site.into(),
                cross_site_ancestor: false,
            },
            ..cookie("session", "bank.example", value)
        };
        let mut baseline = Baseline::default();
        let before = [
            partitioned("https://shop.example", "anon"),
            partitioned("https://news.example", "other"),
        ];
        assert!(!baseline.met(&cond, &cond.sight([], before.clone()), false));
        assert!(!baseline.met(&cond, &cond.sight([], before), false));
        let rotated = [
            partitioned("https://shop.example", "user-42"),
            partitioned("https://news.example", "other"),
        ];
        assert!(baseline.met(&cond, &cond.sight([], rotated), false));

        let mut baseline = Baseline::default();
        let plain = cookie("session", "bank.example", "anon");
        assert!(!baseline.met(&cond, &cond.sight([], [plain.clone()]), false));
        let alongside = [plain, partitioned("https://shop.example", "anon")];
        assert!(baseline.met(&cond, &cond.sight([], alongside), false));
    }

    #[test]
    fn a_restart_leaves_the_url_half_as_it_was() {
        let cond = SuccessCondition {
            url_pattern: Some(Glob::new("https://bank.example/account*")),
            cookie: None,
        };
        let mut baseline = Baseline::default();
        let at = |url| cond.sight([url], []);
        assert!(!baseline.met(&cond, &at("https://bank.example/account"), false));
        // The restored tab after a restart is no more a login than before it.
        assert!(!baseline.met(&cond, &at("https://bank.example/account"), true));
        assert!(baseline.met(&cond, &at("https://bank.example/account?welcome=1"), false));
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
