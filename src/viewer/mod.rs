//! The takeover viewer: our own page around noVNC's `core/rfb.js`, and noVNC's files.
//!
//! Routes (no bearer; the page itself holds no secret, the takeover token reaches it only in
//! the URL fragment, which browsers never send):
//!
//! | route                              | what                                              |
//! |------------------------------------|---------------------------------------------------|
//! | `GET /takeover/{id}`               | the page (`page.html`, noVNC's modules listed for |
//! |                                    | `modulepreload`), strict CSP, `no-store`          |
//! | `GET /takeover/assets/viewer.js`   | the page's script (embedded)                      |
//! | `GET /takeover/assets/viewer.css`  | the page's styles (embedded)                      |
//! | `GET /takeover/novnc/{*path}`      | noVNC's files, confined under `novnc_dir`         |
//!
//! All four are gzipped when the browser accepts it.
//!
//! The page talks to `/takeover/{id}/session`, `/complete`, `/cancel` and `/websocket`, which
//! the `takeover` module serves (see docs and the takeover contract). All its URLs are derived
//! from the page's own path, so the viewer also works behind a path prefix.

mod novnc;
mod preload;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_http::CompressionLevel;

/// The page, its script and its styles, compiled into the binary so the viewer needs no files
/// of ours at run time (noVNC comes from the system's package).
const PAGE_HTML: &str = include_str!("page.html");
const VIEWER_JS: &str = include_str!("viewer.js");
const VIEWER_CSS: &str = include_str!("viewer.css");

/// The longest takeover id the page route accepts.
pub const MAX_ID_BYTES: usize = 64;

/// Where Debian's `novnc` package puts its web root.
pub const DEFAULT_NOVNC_DIR: &str = "/usr/share/novnc";

/// The largest noVNC file served; the biggest in noVNC 1.3 is well under 200 KiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Only scripts, styles and connections to our own origin (`'self'` covers `ws:`/`wss:` to
/// the same host in CSP 3). Images allow `data:`/`blob:` because noVNC draws its cursor and
/// TightPNG rectangles through them. Nothing may frame the page.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data: blob:; font-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Debug, Clone)]
pub struct ViewerConfig {
    /// noVNC's web root (holds `core/rfb.js` and `vendor/pako`).
    pub novnc_dir: PathBuf,
    /// Files larger than this are not served.
    pub max_file_bytes: u64,
}

impl Default for ViewerConfig {
    fn default() -> Self {
        ViewerConfig {
            novnc_dir: PathBuf::from(DEFAULT_NOVNC_DIR),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    /// Bad id, unsafe path, unknown extension, missing file, symlink out of the root,
    /// not a regular file: all look the same to the client.
    #[error("not found")]
    NotFound,
    #[error("file larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading a noVNC file")]
    Read(#[source] std::io::Error),
}

impl IntoResponse for ViewerError {
    fn into_response(self) -> Response {
        let status = match &self {
            ViewerError::NotFound | ViewerError::TooLarge { .. } => StatusCode::NOT_FOUND,
            ViewerError::Read(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let ViewerError::Read(error) = &self {
            tracing::warn!(%error, "viewer: reading a noVNC file failed");
        }
        let code = if status == StatusCode::NOT_FOUND {
            "not_found"
        } else {
            "internal"
        };
        let body = serde_json::json!({"error": {"code": code, "message": status.canonical_reason().unwrap_or("error")}});
        (
            status,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            axum::Json(body),
        )
            .into_response()
    }
}

/// Where `page.html` takes the `modulepreload` links of noVNC's modules.
const PRELOAD_MARKER: &str = "<!-- noVNC's modules -->\n";

struct Viewer {
    cfg: ViewerConfig,
    /// The page with noVNC's modules listed, made on first request: the daemon reads no
    /// noVNC file unless a viewer is opened.
    page: tokio::sync::OnceCell<bytes::Bytes>,
}

impl Viewer {
    async fn page(&self) -> bytes::Bytes {
        let (root, max) = (self.cfg.novnc_dir.clone(), self.cfg.max_file_bytes);
        self.page
            .get_or_init(|| async move {
                // Blocking file reads, off the async workers. If they fail, the page is
                // served without the list: slower to load, the same otherwise.
                let modules =
                    tokio::task::spawn_blocking(move || preload::module_graph(&root, max))
                        .await
                        .unwrap_or_default();
                tracing::debug!(modules = modules.len(), "viewer: noVNC modules to preload");
                PAGE_HTML
                    .replacen(PRELOAD_MARKER, &preload::links(&modules), 1)
                    .into()
            })
            .await
            .clone()
    }
}

/// The viewer's routes, to be merged into the control listener's router.
pub fn routes<S: Clone + Send + Sync + 'static>(cfg: ViewerConfig) -> Router<S> {
    let viewer = Arc::new(Viewer {
        cfg,
        page: tokio::sync::OnceCell::new(),
    });
    Router::new()
        .route("/takeover/{id}", get(page))
        .route(
            "/takeover/assets/viewer.js",
            get(|| async { asset(VIEWER_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/takeover/assets/viewer.css",
            get(|| async { asset(VIEWER_CSS, "text/css; charset=utf-8") }),
        )
        .route("/takeover/novnc/{*path}", get(novnc_file))
        // Gzip for browsers that ask (all do): with it, what a browser is sent before the
        // first pixels (mostly noVNC's ~40 modules) falls from ~530 KB to ~190 KB at
        // deflate's fastest level, which a user on a slow link feels. The fastest level
        // because compressing is on each request's critical path: the default level saves
        // another 40 KB but costs more time than that on a fast link (docs/performance.md). Only these static files: nothing
        // here holds a secret, so compression leaks nothing (BREACH needs a secret next to
        // reflected input). Images and tiny bodies go as they are (the layer's default).
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .quality(CompressionLevel::Fastest),
        )
        .with_state(viewer)
}

/// `[A-Za-z0-9_-]{1,64}`: ids are generated by the takeover module and only ever URL-safe.
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Headers every response of ours carries.
fn security_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

async fn page(State(viewer): State<Arc<Viewer>>, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return ViewerError::NotFound.into_response();
    }
    let mut resp = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        viewer.page().await,
    )
        .into_response();
    security_headers(&mut resp);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    security_headers(&mut resp);
    // Embedded in the binary: revalidate so a new sidecar's page never runs an old script.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn novnc_file(State(viewer): State<Arc<Viewer>>, Path(path): Path<String>) -> Response {
    match novnc::read(&viewer.cfg.novnc_dir, &path, viewer.cfg.max_file_bytes).await {
        Ok(file) => {
            let mut resp =
                ([(header::CONTENT_TYPE, file.content_type)], file.bytes).into_response();
            security_headers(&mut resp);
            let h = resp.headers_mut();
            // noVNC changes only with the package; a sandbox lives for hours at most.
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            // noVNC's own pages (vnc.html) get the same confinement as ours.
            if file.content_type.starts_with("text/html") {
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(PAGE_CSP),
                );
            }
            resp
        }
        Err(error) => {
            tracing::debug!(%error, path_len = path.len(), "viewer: noVNC file refused");
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let long = "a".repeat(MAX_ID_BYTES);
        let too_long = "a".repeat(MAX_ID_BYTES + 1);
        let cases: &[(&str, bool)] = &[
            ("tk_1", true),
            ("AZaz09-_", true),
            (&long, true),
            ("", false),
            (&too_long, false),
            ("a.b", false),
            ("a/b", false),
            ("a%2e", false),
            ("é", false),
            ("a b", false),
        ];
        for (id, ok) in cases {
            assert_eq!(valid_id(id), *ok, "{id:?}");
        }
    }

    #[test]
    fn embedded_page_holds_no_inline_script_or_style() {
        // The CSP forbids inline code; a slip here would break the page silently.
        assert!(!PAGE_HTML.contains("<script>"));
        assert!(!PAGE_HTML.contains("<style"));
        assert!(!PAGE_HTML.contains(" style="));
        let handler = PAGE_HTML.split(" on").skip(1).any(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "no inline event handlers");
        assert!(PAGE_HTML.contains("src=\"assets/viewer.js\""));
        assert!(VIEWER_JS.contains("../novnc/core/rfb.js"));
    }
}
