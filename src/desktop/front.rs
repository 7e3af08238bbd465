//! Which tab a takeover shows the user: the one on the login page's site, else the one the
//! browser already shows.
//!
//! The agent usually leaves the login page in the tab it was using, in front; but it may
//! have opened it in a tab of its own and gone on in another, and Chromium lists its tabs in
//! no order we can rely on. Bringing "the first page" to the front could switch the user to
//! a blank start tab, where every click and key they send goes nowhere the login needs.

use url::{Host, Url};

/// A page target as [`choose_page`] weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageCandidate {
    /// The URL Chromium reports for it.
    pub(crate) url: String,
    /// Whether its document is visible: the selected tab of its window.
    pub(crate) visible: bool,
}

/// The index of the page to bring to the front: a page on the login page's site before
/// any other, then a visible page before a hidden one, then Chromium's order. `None` only
/// for no pages.
pub(crate) fn choose_page(pages: &[PageCandidate], login_url: Option<&str>) -> Option<usize> {
    let login = login_url.and_then(login_host);
    let rank = |p: &PageCandidate| {
        let on_site = login
            .as_ref()
            .is_some_and(|login| page_host(&p.url).is_some_and(|h| same_site(&h, login)));
        (on_site, p.visible)
    };
    let mut best: Option<(usize, (bool, bool))> = None;
    for (i, page) in pages.iter().enumerate() {
        let r = rank(page);
        // Strictly better only: the first of equals wins.
        if best.is_none_or(|(_, b)| r > b) {
            best = Some((i, r));
        }
    }
    best.map(|(i, _)| i)
}

/// The host of a `login_url` as the manifest gives it: informational free text, so one
/// written without a scheme (`example.com/login`, `localhost:3000/login`) is read as
/// `https://`. `None` for one with no host at all.
fn login_host(login_url: &str) -> Option<Host> {
    let login_url = login_url.trim();
    let with_scheme = || Url::parse(&format!("https://{login_url}")).ok();
    let parsed = match Url::parse(login_url) {
        Ok(url) if url.host().is_some() => url,
        // `host:port/path` parses as a URL of scheme `host`, with no host.
        Ok(_) if is_host_and_port(login_url) => with_scheme()?,
        Ok(_) => return None,
        Err(url::ParseError::RelativeUrlWithoutBase) => with_scheme()?,
        Err(_) => return None,
    };
    parsed.host().map(normalise)
}

/// `name:1234…` with no `://`: a host and a port, not a scheme.
fn is_host_and_port(s: &str) -> bool {
    !s.contains("://")
        && s.split_once(':')
            .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()))
}

fn page_host(url: &str) -> Option<Host> {
    Url::parse(url).ok()?.host().map(normalise)
}

/// A name without its trailing dot (`example.com.` is `example.com`); the URL parser has
/// already lowercased it and brought it to punycode.
fn normalise(host: Host<&str>) -> Host {
    match host {
        Host::Domain(name) => Host::Domain(name.trim_end_matches('.').to_owned()),
        other => other.to_owned(),
    }
}

/// The same host, or for names, one a subdomain of the other (`accounts.example.com` for a
/// login page at `example.com`, or `example.com` for one at `www.example.com`). Both
/// arrive normalised (lowercased, punycode) from the URL parser. An address matches only
/// itself.
fn same_site(page: &Host, login: &Host) -> bool {
    match (page, login) {
        (Host::Domain(page), Host::Domain(login)) => {
            page == login || is_subdomain(page, login) || is_subdomain(login, page)
        }
        _ => page == login,
    }
}

fn is_subdomain(name: &str, of: &str) -> bool {
    name.strip_suffix(of).is_some_and(|rest| rest.ends_with('.'))
        // A trailing-dot-only name ("" before the dot) is no subdomain; nor is a bare
        // top-level label a site.
        && name.len() > of.len() + 1
        && of.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(url: &str, visible: bool) -> PageCandidate {
        PageCandidate {
            url: url.into(),
            visible,
        }
    }

    #[test]
    fn no_pages_no_choice() {
        assert_eq!(choose_page(&[], Some("https://example.com/login")), None);
    }

    #[test]
    fn the_login_site_beats_the_tab_in_front() {
        let pages = [
            page("about:blank", false),
            page("https://news.test/", true),
            page("https://example.com/login?next=/", false),
        ];
        assert_eq!(
            choose_page(&pages, Some("https://example.com/login")),
            Some(2)
        );
    }

    #[test]
    fn without_the_login_site_the_tab_in_front_stays() {
        let pages = [page("about:blank", false), page("https://news.test/", true)];
        assert_eq!(
            choose_page(&pages, Some("https://example.com/login")),
            Some(1)
        );
        assert_eq!(choose_page(&pages, None), Some(1));
    }

    #[test]
    fn of_two_tabs_on_the_login_site_the_visible_one() {
        let pages = [
            page("https://example.com/a", false),
            page("https://example.com/b", true),
        ];
        assert_eq!(choose_page(&pages, Some("https://example.com/")), Some(1));
    }

    #[test]
    fn equals_keep_chromiums_order() {
        let pages = [page("about:blank", false), page("about:blank#2", false)];
        assert_eq!(choose_page(&pages, None), Some(0));
        let pages = [page("https://a.test/", true), page("https://b.test/", true)];
        assert_eq!(choose_page(&pages, Some("https://c.test/")), Some(0));
    }

    #[test]
    fn subdomains_either_way_are_the_site() {
        let login = Some("https://www.example.com/login");
        let pages = [
            page("https://other.test/", true),
            page("https://example.com/", false),
        ];
        assert_eq!(choose_page(&pages, login), Some(1));
        let pages = [
            page("https://other.test/", true),
            page("https://accounts.www.example.com/signin", false),
        ];
        assert_eq!(choose_page(&pages, login), Some(1));
    }

    #[test]
    fn a_lookalike_host_is_not_the_site() {
        let login = Some("https://example.com/login");
        for url in [
            "https://notexample.com/login",
            "https://example.com.evil.test/login",
            "https://com/",
        ] {
            let pages = [page("https://front.test/", true), page(url, false)];
            assert_eq!(choose_page(&pages, login), Some(0), "{url}");
        }
        // A login page on a bare top-level name has no subdomains.
        let pages = [
            page("https://front.test/", true),
            page("https://a.localhost/", false),
        ];
        assert_eq!(choose_page(&pages, Some("http://localhost/")), Some(0));
    }

    #[test]
    fn the_login_url_is_read_as_a_browser_would() {
        let pages = [
            page("https://front.test/", true),
            page("https://xn--bcher-kva.example/login", false),
        ];
        // Case, a missing scheme, spaces around it and an internationalised name.
        for login in [
            "https://Bücher.Example/login",
            "bücher.example/login",
            "  https://BÜCHER.example  ",
        ] {
            assert_eq!(choose_page(&pages, Some(login)), Some(1), "{login}");
        }
        // A host and port without a scheme, and a fully qualified name.
        let local = [
            page("https://front.test/", true),
            page("http://localhost:3000/login", false),
        ];
        assert_eq!(choose_page(&local, Some("localhost:3000/login")), Some(1));
        assert_eq!(
            choose_page(&pages, Some("https://xn--bcher-kva.example./login")),
            Some(1)
        );
        let dotted = [
            page("https://front.test/", true),
            page("https://example.com./", false),
        ];
        assert_eq!(choose_page(&dotted, Some("example.com")), Some(1));
        // No host: only visibility counts.
        for login in [
            "",
            "not a url at all",
            "mailto:x@example.com",
            "file:///tmp/x",
        ] {
            assert_eq!(choose_page(&pages, Some(login)), Some(0), "{login:?}");
        }
    }

    #[test]
    fn addresses_match_only_themselves_whatever_the_port() {
        let login = Some("http://127.0.0.1:8080/login");
        let pages = [
            page("http://127.0.0.2:8080/login", true),
            page("http://127.0.0.1:9090/login", false),
        ];
        assert_eq!(choose_page(&pages, login), Some(1));
        let login = Some("http://[::1]:8080/login");
        let pages = [
            page("http://127.0.0.1:8080/", true),
            page("http://[::1]/x", false),
        ];
        assert_eq!(choose_page(&pages, login), Some(1));
    }
}
