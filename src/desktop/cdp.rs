//! Talking to Chromium over CDP: the readiness proof and bringing a page to the front.

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::browser::{
    Bounds, GetWindowForTargetParams, SetWindowBoundsParams, WindowState,
};
use chromiumoxide::cdp::browser_protocol::target::{
    ActivateTargetParams, GetTargetsParams, TargetId, TargetInfo,
};
use chromiumoxide::{Browser, Page};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tracing::{debug, Instrument};

use super::front::{choose_page, PageCandidate};
use super::{DesktopError, Screen};

/// How long `bring_to_front` waits for chromiumoxide to attach to the pages.
const PAGE_ATTACH_WAIT: Duration = Duration::from_secs(2);

/// How long `bring_to_front` waits for a page to say whether it is visible, all pages at
/// once. With the attach wait, the CDP connection's and the window's few commands, well
/// within `takeover::BRING_TO_FRONT_TIMEOUT`.
const VISIBILITY_WAIT: Duration = Duration::from_secs(1);

/// How long the WebSocket handshake with Chromium may take. A stopped or hung Chromium
/// still has its listening socket accept (the kernel does that), then never answers:
/// without a bound, whoever connects waits for good. Generous for a busy machine (a
/// takeover refused because the handshake was slow would be worse than a wait), and within
/// the takeover request's own bound (`takeover::BRING_TO_FRONT_TIMEOUT`).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A CDP connection whose handler task ends when the connection is dropped.
pub(crate) struct Connection {
    pub(crate) browser: Browser,
    handler: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

pub(crate) async fn connect(ws_url: &str) -> Result<Connection, DesktopError> {
    let (browser, mut handler) = tokio::time::timeout(CONNECT_TIMEOUT, Browser::connect(ws_url))
        .await
        .map_err(|_| DesktopError::CdpTimeout {
            what: "connection",
            after: CONNECT_TIMEOUT,
        })?
        .map_err(|source| DesktopError::Cdp { source })?;
    let handler = tokio::spawn(
        async move {
            // The handler must be polled for any command to make progress; its per-message
            // errors (e.g. events newer than our protocol definitions) are not fatal.
            while let Some(event) = handler.next().await {
                if let Err(error) = event {
                    tracing::trace!(%error, "cdp handler");
                }
            }
        }
        .instrument(tracing::debug_span!("cdp_handler")),
    );
    Ok(Connection { browser, handler })
}

/// Proves CDP works end to end: a WebSocket session and a command answered.
pub(crate) async fn prove(ws_url: &str) -> Result<(), DesktopError> {
    let conn = connect(ws_url).await?;
    let version = conn
        .browser
        .version()
        .await
        .map_err(|source| DesktopError::Cdp { source })?;
    // Debug: whoever answers on the CDP port chooses the text.
    debug!(product = ?version.product, "cdp answered");
    Ok(())
}

/// Shows the page the user should see (see [`super::front`]: the one on `login_url`'s site,
/// else the one already showing) maximised and in front.
///
/// Without a window manager (Xvfb/Xvnc alone), "maximized" is a request to a WM that
/// nobody answers: the window keeps its size. So after asking, the bounds are checked and,
/// if they do not cover the screen, set to the full screen explicitly (there are no
/// decorations without a WM, so this is what a maximised window would look like).
pub(crate) async fn bring_to_front(
    ws_url: &str,
    screen: Screen,
    login_url: Option<&str>,
) -> Result<(), DesktopError> {
    let conn = connect(ws_url).await?;
    let cdp = |source| DesktopError::Cdp { source };
    // Target.getTargets itself, not chromiumoxide's `fetch_targets`: that one also attaches
    // to every target again, unflattened, and a page's session may then be the one no
    // command can address ("Session with given id not found").
    let pages: Vec<TargetInfo> = conn
        .browser
        .execute(GetTargetsParams::default())
        .await
        .map_err(cdp)?
        .result
        .target_infos
        .into_iter()
        .filter(|t| t.r#type == "page")
        .collect();
    if pages.is_empty() {
        return Err(DesktopError::NoPage);
    }
    // Which tab is selected is known only inside the pages; one page needs no asking.
    let visible = if pages.len() == 1 {
        vec![true]
    } else {
        let sessions = attach(&conn.browser, &pages).await;
        futures_util::future::join_all(sessions.iter().map(is_visible)).await
    };
    let candidates: Vec<PageCandidate> = pages
        .iter()
        .zip(visible)
        .map(|(t, visible)| PageCandidate {
            url: t.url.clone(),
            visible,
        })
        .collect();
    let chosen = choose_page(&candidates, login_url).ok_or(DesktopError::NoPage)?;
    debug!(pages = pages.len(), chosen, "bringing a page to the front");
    let target: TargetId = pages[chosen].target_id.clone();
    let browser = &conn.browser;
    let window = browser
        .execute(GetWindowForTargetParams {
            target_id: Some(target.clone()),
        })
        .await
        .map_err(cdp)?;
    let window_id = window.result.window_id;
    let set_bounds = |bounds: Bounds| async move {
        browser
            .execute(SetWindowBoundsParams::new(window_id, bounds))
            .await
            .map(drop)
            .map_err(cdp)
    };
    let state = |window_state| Bounds {
        window_state: Some(window_state),
        ..Default::default()
    };
    if window.result.bounds.window_state == Some(WindowState::Minimized) {
        set_bounds(state(WindowState::Normal)).await?;
    }
    set_bounds(state(WindowState::Maximized)).await?;
    let after = browser
        .execute(GetWindowForTargetParams {
            target_id: Some(target.clone()),
        })
        .await
        .map_err(cdp)?;
    let b = &after.result.bounds;
    // Chromium's X11 window keeps a window exactly the screen's size one pixel smaller
    // (so WMs do not take it for fullscreen): within a pixel counts as covering it.
    let covers = |got: Option<i64>, want: u16| got.is_some_and(|got| got >= i64::from(want) - 1);
    let full = b.left == Some(0)
        && b.top == Some(0)
        && covers(b.width, screen.width)
        && covers(b.height, screen.height);
    if !full {
        debug!(bounds = ?b, "maximise had no effect (no window manager), setting full-screen bounds");
        if b.window_state != Some(WindowState::Normal) {
            set_bounds(state(WindowState::Normal)).await?;
        }
        set_bounds(Bounds {
            left: Some(0),
            top: Some(0),
            width: Some(i64::from(screen.width)),
            height: Some(i64::from(screen.height)),
            window_state: None,
        })
        .await?;
    }
    // From the browser session: selects the tab and raises its window, as
    // Page.bringToFront does, with no page session to depend on.
    conn.browser
        .execute(ActivateTargetParams::new(target))
        .await
        .map_err(cdp)?;
    Ok(())
}

/// A session on each page, where chromiumoxide has one within [`PAGE_ATTACH_WAIT`]: it
/// attaches to each page it discovers shortly after connecting.
async fn attach(browser: &Browser, pages: &[TargetInfo]) -> Vec<Option<Page>> {
    let mut sessions: Vec<Option<Page>> = vec![None; pages.len()];
    let deadline = tokio::time::Instant::now() + PAGE_ATTACH_WAIT;
    loop {
        for (session, target) in sessions.iter_mut().zip(pages) {
            if session.is_none() {
                *session = browser.get_page(target.target_id.clone()).await.ok();
            }
        }
        if sessions.iter().all(Option::is_some) || tokio::time::Instant::now() >= deadline {
            return sessions;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the page's document is visible (the selected tab of its window). A page without
/// a session, or one that does not answer within [`VISIBILITY_WAIT`] (a busy renderer),
/// counts as hidden.
async fn is_visible(page: &Option<Page>) -> bool {
    let Some(page) = page else {
        return false;
    };
    match tokio::time::timeout(VISIBILITY_WAIT, page.evaluate("document.visibilityState")).await {
        Ok(Ok(result)) => result
            .into_value::<String>()
            .is_ok_and(|state| state == "visible"),
        _ => false,
    }
}
