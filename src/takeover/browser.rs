//! The seam between takeovers and the desktop: what a takeover needs from the browser.
//! `crate::desktop::Desktop` implements it; tests drive the manager with fakes.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

use crate::desktop::{CdpEndpoint, Desktop, DesktopError, DesktopStatus};
use crate::relay::VncTarget;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("desktop call failed")]
    Desktop(#[source] DesktopError),
    /// The call did not finish in time (a hung browser); it was abandoned.
    #[error("the browser did not answer within {after:?}")]
    TimedOut { after: std::time::Duration },
    /// For fakes and future browsers.
    #[error("browser call failed: {0}")]
    Other(String),
}

pub trait Browser: Send + Sync + 'static {
    /// The current CDP endpoint (it changes when Chromium restarts).
    fn cdp(&self) -> CdpEndpoint;
    /// Whether `cdp` is the endpoint of the browser running now. False for one whose
    /// Chromium has died or been replaced (while the supervisor has not yet published the
    /// next), and, if it ever answers, for a hung one; the caller bounds the wait.
    fn serves(&self, cdp: &CdpEndpoint) -> BoxFuture<'_, bool>;
    /// Where the VNC server listens now.
    fn vnc_target(&self) -> VncTarget;
    fn status(&self) -> watch::Receiver<DesktopStatus>;
    /// Shows the browser maximised and in front, on a tab of `login_url`'s site if one is
    /// open, else on the tab already showing.
    fn bring_to_front(&self, login_url: Option<String>) -> BoxFuture<'_, Result<(), BrowserError>>;
}

impl Browser for Desktop {
    fn cdp(&self) -> CdpEndpoint {
        Desktop::cdp(self)
    }

    fn serves(&self, cdp: &CdpEndpoint) -> BoxFuture<'_, bool> {
        let cdp = cdp.clone();
        Box::pin(async move { Desktop::serves(self, &cdp).await })
    }

    fn vnc_target(&self) -> VncTarget {
        Desktop::vnc_target(self)
    }

    fn status(&self) -> watch::Receiver<DesktopStatus> {
        Desktop::status(self)
    }

    fn bring_to_front(&self, login_url: Option<String>) -> BoxFuture<'_, Result<(), BrowserError>> {
        Box::pin(async move {
            self.bring_browser_to_front(login_url.as_deref())
                .await
                .map_err(BrowserError::Desktop)
        })
    }
}
