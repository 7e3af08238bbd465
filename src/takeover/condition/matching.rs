//! What a condition is matched with: the URL glob and the cookie's name and domain, and
//! how the API makes what an agent writes comparable with what Chromium reports.
//!
//! Chromium reports a page's scheme and host lowercased, an internationalised host in
//! punycode (`https://xn--bcher-kva.example/`), and a cookie's domain the same way. So a
//! pattern written `https://Bank.Example/*` or `https://bücher.example/*`, or a cookie domain
//! `Bücher.example`, would never match as written: [`Glob::parse`] and
//! [`normalise_cookie_domain`] bring them to Chromium's form first, and refuse what could
//! never match whatever the browser does.

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
    /// The pattern matched exactly as written (see [`Glob::parse`] for the API's form).
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

    /// A pattern as the API takes it: in a pattern that starts with a scheme, the scheme
    /// is lowercased and the host too, each label of it that is not ASCII converted to
    /// punycode, as Chromium reports URLs. Userinfo, port, path, query and fragment stay as
    /// written (a path is case-sensitive). A `*` keeps working anywhere, in the host as
    /// well, except in a label that is not ASCII: punycode encodes a label whole, so such a
    /// label could never match and the pattern is refused. A pattern without a scheme is
    /// one glob over the whole URL, where the host cannot be told apart: as written.
    pub fn parse(pattern: &str) -> Result<Self, Unmatchable> {
        Ok(Self::new(&normalise_pattern(pattern)?))
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

/// A pattern or cookie domain that could never match what Chromium reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("could never match what the browser reports")]
pub struct Unmatchable;

/// See [`Glob::parse`].
fn normalise_pattern(pattern: &str) -> Result<String, Unmatchable> {
    let Some((origin, rest)) = split_origin(pattern).filter(|_| starts_with_scheme(pattern)) else {
        return Ok(pattern.to_owned());
    };
    let (scheme, authority) = origin.split_once("://").unwrap_or((origin, ""));
    // As a URL parser does: userinfo ends at the last `@`, the port starts at the last `:`
    // (after an IPv6 literal's `]`).
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let (host, port) = if host_port.starts_with('[') {
        match host_port.split_once(']') {
            Some((host, port)) => (host, Some((']', port))),
            None => (host_port, None),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some((':', port))),
            None => (host_port, None),
        }
    };
    let host = if host.starts_with('[') {
        // An IPv6 literal: hex digits, lowercased like the rest.
        host.to_ascii_lowercase()
    } else {
        normalise_host(host)?
    };
    let mut out = scheme.to_ascii_lowercase();
    out.push_str("://");
    if let Some(userinfo) = userinfo {
        out.push_str(userinfo);
        out.push('@');
    }
    out.push_str(&host);
    if let Some((sep, port)) = port {
        out.push(sep);
        out.push_str(port);
    }
    out.push_str(rest);
    Ok(out)
}

/// A host (possibly with `*`), label by label: ASCII labels lowercased, the others through
/// IDNA (UTS #46, as the URL standard and Chromium do) to punycode.
fn normalise_host(host: &str) -> Result<String, Unmatchable> {
    let labels: Vec<String> = host
        .split('.')
        .map(|label| {
            if label.is_ascii() {
                Ok(label.to_ascii_lowercase())
            } else if label.contains('*') {
                Err(Unmatchable)
            } else {
                idna::domain_to_ascii_cow(label.as_bytes(), idna::AsciiDenyList::URL)
                    .map(std::borrow::Cow::into_owned)
                    .map_err(|_| Unmatchable)
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(labels.join("."))
}

/// A cookie condition's domain as the API takes it: leading and trailing dots dropped (a
/// cookie's domain is reported with at most a leading one, which matching ignores),
/// lowercased, IDNA to punycode. Refused: one that is empty without its dots, or holds a
/// character no cookie domain has — `/`, `:` (a URL or a port written where the domain
/// goes), whitespace, `*` (the domain is matched literally, not as a glob), or anything
/// IDNA refuses.
pub fn normalise_cookie_domain(domain: &str) -> Result<String, Unmatchable> {
    if domain
        .chars()
        .any(|c| matches!(c, '/' | ':' | '*') || c.is_whitespace())
    {
        return Err(Unmatchable);
    }
    let trimmed = domain.trim_matches('.');
    if trimmed.is_empty() {
        return Err(Unmatchable);
    }
    idna::domain_to_ascii_cow(trimmed.as_bytes(), idna::AsciiDenyList::URL)
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| Unmatchable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[test]
    fn patterns_are_brought_to_chromiums_form() {
        let table: &[(&str, Option<&str>)] = &[
            (
                "https://Bank.Example/Account*",
                Some("https://bank.example/Account*"),
            ),
            ("HTTPS://bank.example/*", Some("https://bank.example/*")),
            (
                "https://bücher.example/*",
                Some("https://xn--bcher-kva.example/*"),
            ),
            (
                "https://*.Bücher.example/*",
                Some("https://*.xn--bcher-kva.example/*"),
            ),
            (
                "https://BÜCHER.example/*",
                Some("https://xn--bcher-kva.example/*"),
            ),
            ("https://*.EXAMPLE.com*", Some("https://*.example.com*")),
            ("*://Bank.Example/*", Some("*://bank.example/*")),
            (
                "https://User@Bank.Example:8443/X",
                Some("https://User@bank.example:8443/X"),
            ),
            ("https://bank.example:*/x", Some("https://bank.example:*/x")),
            (
                "http://[::FFFF:7F00:1]:80/X",
                Some("http://[::ffff:7f00:1]:80/X"),
            ),
            ("https://bank.example?Q=1", Some("https://bank.example?Q=1")),
            (
                "https://xn--bcher-kva.example/*",
                Some("https://xn--bcher-kva.example/*"),
            ),
            // Not URL-shaped: the host cannot be told apart, so as written.
            ("*Bank.Example*", Some("*Bank.Example*")),
            // A glob inside a label that is not ASCII: punycode encodes the label whole.
            ("https://bü*.example/*", None),
            ("https://*ü.example/*", None),
        ];
        for (pattern, want) in table {
            assert_eq!(
                normalise_pattern(pattern).ok().as_deref(),
                *want,
                "{pattern:?}"
            );
        }
        // What the reviewer's patterns never matched as written, they match now.
        let cases = [
            (
                "https://Bank.Example/account*",
                "https://bank.example/account",
            ),
            (
                "https://bücher.example/*",
                "https://xn--bcher-kva.example/x",
            ),
            (
                "https://*.bücher.example/*",
                "https://www.xn--bcher-kva.example/x",
            ),
        ];
        for (pattern, url) in cases {
            assert!(!Glob::new(pattern).matches(url), "{pattern} as written");
            assert!(
                Glob::parse(pattern).unwrap().matches(url),
                "{pattern} parsed"
            );
        }
    }

    #[test]
    fn cookie_domains_are_brought_to_chromiums_form() {
        let table: &[(&str, Option<&str>)] = &[
            ("bank.example", Some("bank.example")),
            ("Bank.EXAMPLE", Some("bank.example")),
            (".bank.example", Some("bank.example")),
            ("bank.example.", Some("bank.example")),
            ("bücher.example", Some("xn--bcher-kva.example")),
            ("127.0.0.1", Some("127.0.0.1")),
            ("localhost", Some("localhost")),
            ("", None),
            (".", None),
            ("...", None),
            ("https://bank.example", None),
            ("bank.example/", None),
            ("bank.example:443", None),
            ("[::1]", None),
            ("bank example", None),
            (" bank.example", None),
            ("bank.example\t", None),
            ("*.bank.example", None),
            ("bank%2eexample", None),
        ];
        for (domain, want) in table {
            assert_eq!(
                normalise_cookie_domain(domain).ok().as_deref(),
                *want,
                "{domain:?}"
            );
        }
        let idn = CookieCondition {
            name: "s".into(),
            domain: normalise_cookie_domain("Bücher.example").unwrap(),
        };
        assert!(idn.matches("s", "xn--bcher-kva.example"));
        assert!(idn.matches("s", ".www.xn--bcher-kva.example"));
    }
}
