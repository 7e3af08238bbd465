//! The platform's control endpoint: TCP, off unless configured, every route behind a
//! bearer token read from a file. docs/api.md documents the routes.
//!
//! - `GET /v1/identity`: who this sandbox is and which credentials it holds;
//! - `PUT /v1/credentials`: a newer sealed bundle (raw bytes);
//! - `GET /v1/events`: the event stream (server-sent events), beginning with the live
//!   takeover if there is one.
//!
//! Errors use the agent API's format and mapping (`api::error`). Takeover routes (list,
//! get, complete, cancel, the viewer page and its WebSocket) are added to `router` by the
//! takeover module: bearer-protected ones before the `route_layer`, view-token ones after.
//!
//! Submodules: `token` (the bearer token), `sse` (the event stream), `slots` (the
//! connection limit and the platform's reserve).

mod slots;
mod sse;
mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Layer as _;
use tracing::Instrument;

use crate::api::error::ApiError;
use crate::api::ratelimit::LogLimiter;
use crate::api::routes::check_content_length;
use crate::api::server::{self, ConnLimits};
use crate::bundle::{BundleError, MAX_BUNDLE_BYTES};
use crate::keys::SandboxPublicKey;
use crate::store::Store;

use slots::{ReserveGate, Slots};
pub use token::{bearer_credentials, BearerToken, MAX_TOKEN_FILE_BYTES, MIN_TOKEN_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot read token file {path}")]
    TokenRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path} is accessible by others (mode {mode:o}); make it 0600 or 0400")]
    TokenPermissions { path: String, mode: u32 },
    #[error("token file {path} must hold one token of {min}..={max} bytes")]
    TokenFormat { path: String, min: usize, max: u64 },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How many of the control listener's connection slots are kept for the platform.
pub const PLATFORM_RESERVE: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLimits {
    /// Most simultaneous connections, the platform's reserve included
    /// (`--control-max-connections`).
    pub max_connections: usize,
    /// The last of those slots, which only the platform may use: a connection accepted when
    /// all the others are taken is served only requests under `/v1/` with the bearer token
    /// ([`serve`]). Kept only where [`serve`] is given the token.
    pub platform_reserve: usize,
    /// Time to receive a request body (a bundle) once its head arrived.
    pub body_timeout: Duration,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: Duration,
    pub conn: ConnLimits,
}

impl Default for ControlLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            platform_reserve: PLATFORM_RESERVE,
            body_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(15),
            conn: ConnLimits::default(),
        }
    }
}

/// What the control endpoint's handlers reach. The takeover routes add their fields.
#[derive(Clone)]
pub struct ControlState {
    pub store: Arc<Store>,
    pub token: Arc<BearerToken>,
    pub sandbox_id: String,
    pub public_key: SandboxPublicKey,
    pub limits: ControlLimits,
    pub log_limiter: Arc<LogLimiter>,
    /// Takeover routes for the platform (bearer) and the viewer (takeover tokens).
    pub takeovers: Option<crate::takeover::TakeoverManager>,
    pub viewer: crate::viewer::ViewerConfig,
}

impl std::fmt::Debug for ControlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlState")
            .field("sandbox_id", &self.sandbox_id)
            .field("store", &self.store)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ControlState {
    pub fn new(
        store: Arc<Store>,
        token: BearerToken,
        sandbox_id: String,
        public_key: SandboxPublicKey,
    ) -> Self {
        Self {
            store,
            token: Arc::new(token),
            sandbox_id,
            public_key,
            limits: ControlLimits::default(),
            log_limiter: Arc::new(LogLimiter::default()),
            takeovers: None,
            viewer: crate::viewer::ViewerConfig::default(),
        }
    }
}

/// The control endpoint's routes.
pub fn router(state: ControlState) -> Router {
    let mut router = Router::new()
        .route("/v1/identity", get(identity))
        .route("/v1/credentials", put(put_credentials))
        .route("/v1/events", get(sse::events));
    if let Some(manager) = &state.takeovers {
        router = router.merge(crate::takeover::routes::control_routes(manager.clone()));
    }
    // Bearer-protected routes above this line; the viewer's (takeover-token) routes below.
    router = router.route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_bearer,
    ));
    if let Some(manager) = &state.takeovers {
        router = router.merge(viewer_routes(manager.clone(), state.viewer.clone()));
    }
    // And around the whole routed service, for what no route answers under `/v1/`:
    // without the token, a wrong method or an unknown path is the same 401 as any other
    // `/v1/` request, not a 405 or 404 that would map the routes for a stranger. It must
    // wrap the router from outside: `Router::layer` wraps each route's handlers one by
    // one, inside the method router that adds the `Allow` header to its 405 fallback, so
    // a 401 from there still said `allow: GET,HEAD`. The route layer above stays the
    // guarantee for the routes themselves (whatever path spelling reaches them).
    let routed = with_fallbacks(router).with_state(state.clone());
    Router::new().fallback_service(
        middleware::from_fn_with_state(state, require_bearer_under_v1).layer(routed),
    )
}

/// The viewer's routes alone (takeover tokens, no bearer): what `dev` serves on loopback,
/// where there is no platform.
pub fn viewer_router(
    manager: crate::takeover::TakeoverManager,
    viewer: crate::viewer::ViewerConfig,
) -> Router {
    with_fallbacks(viewer_routes(manager, viewer))
}

/// The page, its assets and noVNC's files, and the takeover's session, WebSocket,
/// complete and cancel routes.
fn viewer_routes<S: Clone + Send + Sync + 'static>(
    manager: crate::takeover::TakeoverManager,
    viewer: crate::viewer::ViewerConfig,
) -> Router<S> {
    crate::takeover::routes::viewer_routes(manager).merge(crate::viewer::routes(viewer))
}

fn with_fallbacks<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// Binds the control endpoint and logs the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ControlError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ControlError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "control endpoint listening");
    Ok(listener)
}

/// Serves the control endpoint until `stop` fires; in-flight requests then get a short
/// grace (an event stream ends at once, with its last chunk).
///
/// At most `limits.max_connections` connections are served at once; one more is told
/// `503 too_many_connections` and closed as soon as it is accepted. With `platform` (the
/// bearer token), the last `limits.platform_reserve` of those slots are the platform's: a
/// connection accepted when every other slot is taken holds a reserved one, and each
/// request on it is served only if it is the platform's (under `/v1/`, with the token), or
/// if a general slot has come free meanwhile (the connection moves to it). Any other is
/// answered `503 too_many_connections` and the connection closed, giving its slot back.
/// The check is per request because the slot is taken at accept, before anything is read:
/// the head says whose connection it is. So a burst of viewer page loads (behind an edge,
/// one connection per module in flight) can hold every general slot, but a reserved slot
/// only for as long as its request takes to arrive and be refused, and the platform's
/// calls and event stream still get in.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ControlLimits,
    platform: Option<Arc<BearerToken>>,
    stop: CancellationToken,
) {
    let reserved = match platform {
        Some(_) => limits.platform_reserve.min(limits.max_connections),
        None => 0,
    };
    let slots = Slots::new(limits.max_connections - reserved, reserved);
    tracing::info!(
        max_connections = limits.max_connections,
        reserved_for_platform = reserved,
        "connection limit"
    );
    let tracker = TaskTracker::new();
    let over_limit = server::over_limit_response();
    let log_limiter = Arc::new(LogLimiter::default());
    loop {
        let (stream, remote) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if let Some(suppressed) = log_limiter.check() {
                        tracing::warn!(%error, suppressed, "control accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slots.take() else {
            let _ = stream.try_write(&over_limit);
            if let Some(suppressed) = log_limiter.check() {
                tracing::warn!(%remote, limit = limits.max_connections, suppressed, "control connection refused: too many");
            }
            continue;
        };
        // Held by the connection's task, and by its gate if it is one of the reserve
        // (there is a reserve only with the platform's token).
        let (slot, router) = match &platform {
            Some(token) if slot.reserved => {
                let gate = ReserveGate::new(slot, &slots, token.clone(), log_limiter.clone());
                (gate.slot(), gate.guard(router.clone()))
            }
            _ => (Arc::new(std::sync::Mutex::new(slot)), router.clone()),
        };
        let _ = stream.set_nodelay(true);
        give_up_unacknowledged(&stream, limits.conn.write_timeout);
        let stop = stop.clone();
        tracker.spawn(
            async move {
                server::serve_connection(stream, router, RemoteAddr(remote), limits.conn, stop)
                    .await;
                drop(slot);
            }
            .instrument(tracing::debug_span!("control_conn", %remote)),
        );
    }
    tracker.close();
    tracker.wait().await;
}

/// Has the kernel close the connection once data it sent stays unacknowledged for
/// `after` (`TCP_USER_TIMEOUT`). The write timeout only fires once the send buffer is
/// full; a peer gone without a word (a dead link, a crashed host) while the event stream
/// sends its few bytes of keep-alive every 15 s would otherwise be retransmitted to for
/// the kernel's ~15 minutes. The relay sets it back for a viewer's WebSocket.
fn give_up_unacknowledged(stream: &tokio::net::TcpStream, after: Duration) {
    let ms = u32::try_from(after.as_millis()).unwrap_or(u32::MAX);
    if let Err(error) =
        nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::TcpUserTimeout, &ms)
    {
        tracing::debug!(%error, "TCP_USER_TIMEOUT not set");
    }
}

/// The peer address of a control connection, in request extensions.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// [`require_bearer`] for every path under `/v1/`, routed or not; other paths (the
/// viewer's) pass.
async fn require_bearer_under_v1(
    state: State<ControlState>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/v1/") {
        require_bearer(state, request, next).await
    } else {
        next.run(request).await
    }
}

async fn require_bearer(
    State(state): State<ControlState>,
    request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !state.token.verify(header) {
        if let Some(suppressed) = state.log_limiter.check() {
            let remote = request.extensions().get::<RemoteAddr>().map(|r| r.0);
            tracing::warn!(remote = ?remote, path = ?request.uri().path(), suppressed, "control request refused: bad bearer token");
        }
        return ApiError::Unauthorized.into_response();
    }
    next.run(request).await
}

#[derive(Serialize)]
struct Identity {
    sandbox_id: String,
    /// `None` (null) when no bundle is accepted: nothing should be sealed to this sandbox.
    public_key: Option<String>,
    accepts_bundles: bool,
    credentials_version: Option<u64>,
}

#[tracing::instrument(level = "debug", name = "identity", skip_all)]
async fn identity(State(state): State<ControlState>) -> Json<Identity> {
    // Without an opener (`run` without `--platform-key`) a push is refused with
    // `bundles_disabled`; advertising a key would invite the platform to seal one anyway.
    let accepts_bundles = state.store.accepts_bundles();
    Json(Identity {
        sandbox_id: state.sandbox_id.clone(),
        public_key: accepts_bundles
            .then(|| base64::engine::general_purpose::STANDARD.encode(state.public_key.0)),
        accepts_bundles,
        credentials_version: state.store.version(),
    })
}

#[derive(Serialize)]
struct Installed {
    version: u64,
}

#[tracing::instrument(level = "info", name = "put_credentials", skip_all)]
async fn put_credentials(
    State(state): State<ControlState>,
    request: Request,
) -> Result<Json<Installed>, ApiError> {
    // First: nothing about the request can change this answer, and the platform must not
    // read a 413 or a 408 as a bundle to be fixed and sent again.
    if !state.store.accepts_bundles() {
        return Err(ApiError::BundlesDisabled);
    }
    // A media type is case-insensitive and may carry parameters (RFC 9110 8.3.1).
    let octet_stream = |value: &header::HeaderValue| {
        value.to_str().is_ok_and(|v| {
            v.split(';').next().is_some_and(|essence| {
                essence
                    .trim()
                    .eq_ignore_ascii_case("application/octet-stream")
            })
        })
    };
    if !request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(octet_stream)
    {
        return Err(ApiError::UnsupportedMediaType);
    }
    let oversized = |size| {
        ApiError::Bundle(BundleError::Oversized {
            size,
            limit: MAX_BUNDLE_BYTES,
        })
    };
    if let Err(error) = check_content_length(request.headers(), MAX_BUNDLE_BYTES) {
        return Err(match error {
            ApiError::PayloadTooLarge { .. } => oversized(MAX_BUNDLE_BYTES + 1),
            other => other,
        });
    }
    let body = tokio::time::timeout(state.limits.body_timeout, read_bundle(request.into_body()))
        .await
        .map_err(|_| ApiError::RequestTimeout)??;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match state.store.install_bundle(&body, now).await {
        Ok(version) => Ok(Json(Installed { version })),
        Err(error) => {
            let error = ApiError::from(error);
            // A refusal is the platform's mistake (or an attack) and rare; log its code.
            tracing::warn!(code = error.code(), error = %crate::api::error::error_chain(&error), "bundle refused");
            Err(error)
        }
    }
}

async fn read_bundle(body: Body) -> Result<bytes::Bytes, ApiError> {
    match crate::api::routes::read_body(body, MAX_BUNDLE_BYTES).await {
        Err(ApiError::PayloadTooLarge { .. }) => Err(ApiError::Bundle(BundleError::Oversized {
            size: MAX_BUNDLE_BYTES + 1,
            limit: MAX_BUNDLE_BYTES,
        })),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::platform::events::{EventBus, PlatformEvent};
    use crate::store::testing::{inert_injector, manifest, materialized};

    const TOKEN: &str = "0123456789abcdef0123";

    fn state() -> ControlState {
        state_with(None)
    }

    /// A daemon that accepts bundles (none of the tests' bodies is a real one).
    fn accepting_state() -> ControlState {
        state_with(Some(crate::bundle::Opener {
            sandbox_id: "sbx-1".into(),
            sandbox_key: crate::keys::SandboxSecretKey::from_bytes([0x11; 32]),
            trusted: vec![],
        }))
    }

    fn state_with(opener: Option<crate::bundle::Opener>) -> ControlState {
        let store = Arc::new(Store::new(
            manifest(),
            opener,
            inert_injector(),
            EventBus::new(),
        ));
        let token = BearerToken::from_bytes(TOKEN.as_bytes()).unwrap();
        ControlState::new(store, token, "sbx-1".into(), SandboxPublicKey([7; 32]))
    }

    async fn call(
        state: &ControlState,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        request = request.header(header::CONTENT_LENGTH, body.len());
        let response = router(state.clone())
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[test]
    fn token_rules() {
        assert!(BearerToken::from_bytes(b"short").is_none());
        assert!(BearerToken::from_bytes(b"0123456789abcde f0123").is_none());
        let token = BearerToken::from_bytes(b"  0123456789abcdef\n").unwrap();
        assert!(token.verify(Some(b"Bearer 0123456789abcdef")));
        assert!(token.verify(Some(b"Bearer  0123456789abcdef ")));
        assert!(!token.verify(Some(b"Bearer 0123456789abcdeF")));
        assert!(!token.verify(Some(b"Bearer 0123456789abcdef0")));
        assert!(!token.verify(Some(b"0123456789abcdef")));
        assert!(!token.verify(None));
        assert_eq!(format!("{token:?}"), "BearerToken([REDACTED])");
    }

    /// The scheme is case-insensitive (RFC 9110 §11.1); the token itself is not, and
    /// another scheme, or the scheme run into the token, is refused.
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let token = BearerToken::from_bytes(b"0123456789abcdef").unwrap();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let value = format!("{scheme} 0123456789abcdef");
            assert!(token.verify(Some(value.as_bytes())), "{value}");
        }
        for value in [
            "BEARER 0123456789ABCDEF",
            "Bearer0123456789abcdef",
            "Bearer\t0123456789abcdef",
            "Basic 0123456789abcdef",
            "Bearers 0123456789abcdef",
            "Bear 0123456789abcdef",
            "Bearer",
            "Bearer ",
            "",
        ] {
            assert!(!token.verify(Some(value.as_bytes())), "{value:?}");
        }
        assert_eq!(bearer_credentials(b"bEARER  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"B\xc3\xa9arer abc"), None);
    }

    #[test]
    fn token_file_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            BearerToken::load(&path),
            Err(ControlError::TokenPermissions { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(BearerToken::load(&path)
            .unwrap()
            .verify(Some(format!("Bearer {TOKEN}").as_bytes())));
        std::fs::write(&path, "tooshort").unwrap();
        assert!(matches!(
            BearerToken::load(&path),
            Err(ControlError::TokenFormat { .. })
        ));
        let error = BearerToken::load(&path).unwrap_err().to_string();
        assert!(!error.contains("tooshort"));
    }

    /// Any access for group or others, read, write or execute alone, refuses the token;
    /// the owner's own bits are the owner's business.
    #[test]
    fn a_token_file_any_other_user_may_access_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        for mode in [0o640, 0o620, 0o610, 0o604, 0o602, 0o601, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let refused = BearerToken::load(&path);
            assert!(
                matches!(refused, Err(ControlError::TokenPermissions { mode: m, .. }) if m == mode),
                "{mode:o}: {refused:?}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let loaded = BearerToken::load(&path).unwrap_or_else(|e| panic!("{mode:o}: {e}"));
            assert!(loaded.verify(Some(format!("Bearer {TOKEN}").as_bytes())));
        }
    }

    #[tokio::test]
    async fn routes_and_auth() {
        let state = state();
        let bearer = format!("Bearer {TOKEN}");
        let (status, body) = call(&state, Method::GET, "/v1/identity", None, vec![]).await;
        assert_eq!(
            (status.as_u16(), body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
        let (status, _) = call(
            &state,
            Method::GET,
            "/v1/identity",
            Some("Bearer wrong-token-wrong-token"),
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = call(&state, Method::GET, "/v1/identity", Some(&bearer), vec![]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"sandbox_id": "sbx-1", "public_key": null, "accepts_bundles": false, "credentials_version": null})
        );
        state.store.install_materialized(materialized(5, "k"));
        let (_, body) = call(&state, Method::GET, "/v1/identity", Some(&bearer), vec![]).await;
        assert_eq!(body["credentials_version"], 5);
        // No opener in this store: a push is refused without touching the credentials.
        let (status, body) = call(
            &state,
            Method::PUT,
            "/v1/credentials",
            Some(&bearer),
            b"bundle".to_vec(),
        )
        .await;
        assert_eq!(
            (status.as_u16(), body["error"]["code"].as_str()),
            (409, Some("bundles_disabled"))
        );
        let (status, body) = call(
            &state,
            Method::PUT,
            "/v1/credentials",
            None,
            b"bundle".to_vec(),
        )
        .await;
        assert_eq!(
            (status.as_u16(), body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
        let (status, body) = call(
            &state,
            Method::GET,
            "/v1/credentials",
            Some(&bearer),
            vec![],
        )
        .await;
        assert_eq!(
            (status.as_u16(), body["error"]["code"].as_str()),
            (405, Some("method_not_allowed"))
        );
        let (status, body) = call(&state, Method::GET, "/nope", Some(&bearer), vec![]).await;
        assert_eq!(
            (status.as_u16(), body["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
    }

    #[tokio::test]
    async fn oversized_bundle_is_413_before_reading() {
        let state = accepting_state();
        let request = Request::builder()
            .method(Method::PUT)
            .uri("/v1/credentials")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_LENGTH, MAX_BUNDLE_BYTES + 1)
            .body(Body::empty())
            .unwrap();
        let response = router(state).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(std::str::from_utf8(&bytes)
            .unwrap()
            .contains("bundle_oversized"));
    }

    /// A daemon that takes no bundles says so whatever the push: not 413 for an oversized
    /// one, 415 for a wrong type or 408 for a slow body, which would each read as a bundle
    /// to fix and send again.
    #[tokio::test]
    async fn a_push_to_a_daemon_without_bundles_is_bundles_disabled_before_anything_else() {
        let pushes = [
            (header::CONTENT_LENGTH, (MAX_BUNDLE_BYTES + 1).to_string()),
            (header::CONTENT_TYPE, "text/plain".to_owned()),
        ];
        for (name, value) in pushes {
            let request = Request::builder()
                .method(Method::PUT)
                .uri("/v1/credentials")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(name.clone(), value.clone())
                .body(Body::empty())
                .unwrap();
            let response = router(state()).oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::CONFLICT, "{name}: {value}");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            assert!(
                std::str::from_utf8(&bytes)
                    .unwrap()
                    .contains("bundles_disabled"),
                "{name}: {value}"
            );
        }
    }

    /// `TCP_USER_TIMEOUT` (ms) of the socket in this process that serves `client`, found
    /// among our descriptors by its addresses.
    fn served_user_timeout(client: &std::net::SocketAddr, server: u16) -> u32 {
        use nix::sys::socket::{getpeername, getsockname, getsockopt, sockopt, SockaddrIn};
        use std::os::fd::BorrowedFd;
        for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
            let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse() else {
                continue;
            };
            // SAFETY: only queried, never closed; the connection we look for stays open
            // meanwhile, and any other descriptor just fails the queries below.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let local = getsockname::<SockaddrIn>(std::os::fd::AsRawFd::as_raw_fd(&fd));
            let peer = getpeername::<SockaddrIn>(std::os::fd::AsRawFd::as_raw_fd(&fd));
            if let (Ok(local), Ok(peer)) = (local, peer) {
                if local.port() == server && peer.port() == client.port() {
                    return getsockopt(&fd, sockopt::TcpUserTimeout).unwrap();
                }
            }
        }
        panic!("no socket serving {client}");
    }

    /// A control connection is dropped by the kernel once what it sent stays
    /// unacknowledged for the write timeout (a peer gone without a word), while a viewer's
    /// WebSocket, handed to the relay, is back under the kernel's default.
    #[tokio::test]
    async fn connections_give_up_on_a_silent_peer_but_a_viewer_websocket_is_left_to_the_relay() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = ControlLimits::default();
        let (sockets, mut held) = tokio::sync::mpsc::unbounded_channel();
        let app = Router::new().route(
            "/ws",
            get(move |mut request: Request| async move {
                let (response, pending) = crate::relay::accept_viewer(&mut request).unwrap();
                tokio::spawn(async move {
                    let _ = sockets.send(pending.socket(None).await.unwrap());
                });
                response
            }),
        );
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, limits, None, stop.clone()));

        let mut http = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        http.write_all(b"GET /nothing HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let _ = http.read(&mut [0; 512]).await.unwrap();
        assert_eq!(
            served_user_timeout(&http.local_addr().unwrap(), port),
            u32::try_from(limits.conn.write_timeout.as_millis()).unwrap()
        );

        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let viewer = tcp.local_addr().unwrap();
        let (_ws, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/ws"), tcp)
            .await
            .unwrap();
        let _socket = held.recv().await.unwrap();
        assert_eq!(served_user_timeout(&viewer, port), 0);
        stop.cancel();
        drop(http);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn events_stream_and_lag() {
        let state = state();
        let request = Request::builder()
            .uri("/v1/events")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        // Overflow the buffer before reading: the subscriber is told it lagged.
        for version in 0..(crate::platform::events::EVENT_BUFFER as u64 + 5) {
            state
                .store
                .events()
                .publish(PlatformEvent::CredentialsInstalled { version });
        }
        let mut body = response.into_body().into_data_stream();
        use futures_util::StreamExt;
        let mut text = String::new();
        while !text.contains("credentials_installed") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert!(
            text.starts_with("event: lagged\ndata: {\"type\":\"lagged\",\"missed\":5}\n\n"),
            "{text}"
        );
        assert!(text.contains("event: credentials_installed\ndata: {\"type\":\"credentials_installed\",\"version\":5}"), "{text}");
    }
}
