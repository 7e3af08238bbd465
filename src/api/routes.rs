//! The agent API's routes. Every handler has the same shape: a span, authorization from
//! the peer's credentials, one call into the domain, errors through `ApiError`.
//! Request and response bodies are never logged.

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;
use super::peer::Peer;
use super::ApiState;
use crate::store::ConnectionState;

/// The agent API. Routes added before `route_layer(request_deadline)` get the whole-request
/// deadline; long-poll routes (the takeover's `wait`) are merged after it, under
/// `request_read_deadline`, which bounds only the reading of the request.
pub fn router(state: ApiState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/connections", get(list_connections))
        .route("/v1/connections/{id}", get(connect))
        // `connect("")` from an SDK that percent-encodes the id: an id, empty, that names no
        // connection, not a route that does not exist.
        .route("/v1/connections/", get(empty_id));
    if let Some(manager) = &state.takeovers {
        router = router.merge(crate::takeover::routes::agent_routes(
            manager.clone(),
            state.policy,
        ));
    }
    let mut router = router.route_layer(middleware::from_fn_with_state(
        state.clone(),
        request_deadline,
    ));
    if let Some(manager) = &state.takeovers {
        router = router.merge(
            crate::takeover::routes::agent_wait_routes(manager.clone(), state.policy).route_layer(
                middleware::from_fn_with_state(state.clone(), request_read_deadline),
            ),
        );
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), body_limit))
        .with_state(state)
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// Liveness: the daemon answers. Anyone may ask.
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    credentials_version: Option<u64>,
}

/// Readiness, a latch: credentials are installed (or none are needed). Anyone may ask.
async fn readyz(State(state): State<ApiState>) -> Result<Json<Ready>, ApiError> {
    if state.store.is_ready() {
        Ok(Json(Ready {
            status: "ready",
            credentials_version: state.store.version(),
        }))
    } else {
        Err(ApiError::NotReady)
    }
}

#[derive(Serialize)]
struct ConnectionInfo<'a> {
    id: &'a str,
    display_name: &'a str,
    auth_mode: &'static str,
    state: ConnectionState,
}

#[derive(Serialize)]
struct ConnectionList<'a> {
    connections: Vec<ConnectionInfo<'a>>,
}

/// The declared connections and their states; no values. Same callers as credentials:
/// the list tells which services the agent uses.
#[tracing::instrument(level = "debug", name = "list_connections", skip_all, fields(uid = peer.as_ref().map(|p| p.uid)))]
async fn list_connections(
    State(state): State<ApiState>,
    peer: Option<Extension<Peer>>,
) -> Response {
    if let Err(error) = authorize(&state, peer.as_deref()) {
        return error.into_response();
    }
    let states = state.store.connection_states();
    let list = ConnectionList {
        connections: states
            .iter()
            .map(|(c, s)| ConnectionInfo {
                id: &c.id,
                display_name: &c.display_name,
                auth_mode: c.mode.name(),
                state: *s,
            })
            .collect(),
    };
    Json(list).into_response()
}

/// `ctx.connect(id)`: the object serialized at install time.
#[tracing::instrument(level = "debug", name = "connect", skip_all, fields(uid = peer.as_ref().map(|p| p.uid)))]
async fn connect(
    State(state): State<ApiState>,
    peer: Option<Extension<Peer>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, peer.as_deref())?;
    // A segment that does not even decode cannot name a declared connection.
    let Path(id) = id.map_err(|_| ApiError::ConnectionNotFound)?;
    let body = state.store.connect(&id)?;
    tracing::debug!(connection = %id, "credential served");
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /v1/connections/`: the empty id is not declared, as any id that is not a valid one
/// (docs/api.md); the same callers as `connect` are told so, others get 403 as there.
async fn empty_id(
    State(state): State<ApiState>,
    peer: Option<Extension<Peer>>,
) -> Result<Response, ApiError> {
    authorize(&state, peer.as_deref())?;
    Err(ApiError::ConnectionNotFound)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn authorize(state: &ApiState, peer: Option<&Peer>) -> Result<(), ApiError> {
    let result = state.policy.authorize_credentials(peer);
    if let Err(ApiError::Forbidden { uid }) = &result {
        if let Some(suppressed) = state.log_limiter.check() {
            tracing::warn!(
                uid,
                pid = peer.and_then(|p| p.pid),
                suppressed,
                "peer refused"
            );
        }
    }
    result
}

/// The whole request (after its head) must complete within the request timeout; the head
/// itself is bounded by hyper's header read timeout.
async fn request_deadline(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout.into_response(),
    }
}

/// For long polls: the request's body must arrive within the request timeout (it is read
/// whole here, within the body limit, and handed on); the handler itself is not bounded.
async fn request_read_deadline(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        state.limits.request_timeout,
        read_body(body, state.limits.max_body_bytes),
    );
    let body = match read.await {
        Ok(Ok(bytes)) => Body::from(bytes),
        Ok(Err(error)) => return error.into_response(),
        Err(_) => return ApiError::RequestTimeout.into_response(),
    };
    next.run(Request::from_parts(parts, body)).await
}

/// Refuses a declared body over the limit before routing, and caps undeclared (chunked)
/// bodies so a handler reading one stops at the limit.
async fn body_limit(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let limit = state.limits.max_body_bytes;
    if let Err(error) = check_content_length(request.headers(), limit) {
        return error.into_response();
    }
    let request = request.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
    next.run(request).await
}

pub(crate) fn check_content_length(
    headers: &axum::http::HeaderMap,
    limit: usize,
) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(());
    };
    let length: u64 =
        value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or(ApiError::BadRequest {
                reason: "content-length",
            })?;
    if length > limit as u64 {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(())
}

/// Reads a JSON request body for routes that take one: at most `limit` bytes, unknown
/// fields refused (request types carry `#[serde(deny_unknown_fields)]`).
pub async fn read_json<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = read_body(body, limit).await?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::BadRequest { reason: "json" })
}

/// Reads a whole body of at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>())
            || error.to_string().contains("length limit");
        if too_large {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadRequest { reason: "body" }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::{Method, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::api::peer::Policy;
    use crate::api::ApiLimits;
    use crate::platform::events::EventBus;
    use crate::store::testing::{inert_injector, manifest, materialized};
    use crate::store::Store;

    fn state(installed: bool) -> ApiState {
        let store = Arc::new(Store::new(
            manifest(),
            None,
            inert_injector(),
            EventBus::new(),
        ));
        if installed {
            store.install_materialized(materialized(4, "sk-test"));
        }
        let mut state = ApiState::new(store, Some(1000));
        state.policy = Policy {
            agent_uid: Some(1000),
            daemon_uid: 0,
        };
        state.limits = ApiLimits {
            max_body_bytes: 64,
            ..ApiLimits::default()
        };
        state
    }

    async fn call(
        state: &ApiState,
        method: Method,
        uri: &str,
        uid: Option<u32>,
        body: &'static [u8],
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap();
        if let Some(uid) = uid {
            request.extensions_mut().insert(Peer {
                uid,
                gid: uid,
                pid: None,
            });
        }
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// State, method, path, peer uid, expected status, expected code.
    type Case<'a> = (&'a ApiState, Method, &'a str, Option<u32>, u16, &'a str);

    #[tokio::test]
    async fn route_table() {
        let ready = state(true);
        let fresh = state(false);
        let cases: Vec<Case> = vec![
            (&ready, Method::GET, "/healthz", Some(65534), 200, ""),
            (&ready, Method::GET, "/healthz", None, 200, ""),
            (&ready, Method::GET, "/readyz", Some(65534), 200, ""),
            (&fresh, Method::GET, "/readyz", Some(1000), 503, "not_ready"),
            (&ready, Method::GET, "/v1/connections", Some(1000), 200, ""),
            (
                &ready,
                Method::GET,
                "/v1/connections",
                Some(65534),
                403,
                "forbidden",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/openai",
                Some(1000),
                200,
                "",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/openai",
                Some(0),
                200,
                "",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/openai",
                Some(65534),
                403,
                "forbidden",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/openai",
                None,
                403,
                "forbidden",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/nope",
                Some(1000),
                404,
                "connection_not_found",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/..%2Fetc",
                Some(1000),
                404,
                "connection_not_found",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/%FF",
                Some(1000),
                404,
                "connection_not_found",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/portal",
                Some(1000),
                409,
                "invalid_auth_mode",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/google",
                Some(1000),
                503,
                "credential_missing",
            ),
            (
                &fresh,
                Method::GET,
                "/v1/connections/openai",
                Some(1000),
                503,
                "credential_missing",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/",
                Some(1000),
                404,
                "connection_not_found",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/",
                Some(65534),
                403,
                "forbidden",
            ),
            (
                &ready,
                Method::POST,
                "/v1/connections/",
                Some(1000),
                405,
                "method_not_allowed",
            ),
            (
                &ready,
                Method::GET,
                "/v1/nope",
                Some(1000),
                404,
                "not_found",
            ),
            (
                &ready,
                Method::GET,
                "/v1/connections/a/b",
                Some(1000),
                404,
                "not_found",
            ),
            (
                &ready,
                Method::POST,
                "/v1/connections/openai",
                Some(1000),
                405,
                "method_not_allowed",
            ),
            (
                &ready,
                Method::DELETE,
                "/healthz",
                Some(1000),
                405,
                "method_not_allowed",
            ),
        ];
        for (state, method, uri, uid, status, code) in cases {
            let (got, body) = call(state, method.clone(), uri, uid, b"").await;
            assert_eq!(got.as_u16(), status, "{method} {uri} uid {uid:?}: {body}");
            if !code.is_empty() {
                assert_eq!(body["error"]["code"], code, "{method} {uri}");
            }
        }
    }

    #[tokio::test]
    async fn bodies() {
        let state = state(true);
        let (_, body) = call(
            &state,
            Method::GET,
            "/v1/connections/openai",
            Some(1000),
            b"",
        )
        .await;
        assert_eq!(body, serde_json::json!({"api_key": "sk-test"}));
        let (_, body) = call(&state, Method::GET, "/healthz", None, b"").await;
        assert_eq!(body, serde_json::json!({"status": "ok"}));
        let (_, body) = call(&state, Method::GET, "/readyz", None, b"").await;
        assert_eq!(
            body,
            serde_json::json!({"status": "ready", "credentials_version": 4})
        );
        let (_, body) = call(&state, Method::GET, "/v1/connections", Some(1000), b"").await;
        let list = body["connections"].as_array().unwrap();
        let states: Vec<_> = list
            .iter()
            .map(|c| (c["id"].as_str().unwrap(), c["state"].as_str().unwrap()))
            .collect();
        assert_eq!(
            states,
            vec![
                ("openai", "ready"),
                ("google", "missing"),
                ("ssh_key", "ready"),
                ("portal", "interactive")
            ]
        );
        assert_eq!(list[1]["auth_mode"], "oauth_redirect");
        assert!(!body.to_string().contains("sk-test"));
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let state = state(true);
        let (status, body) = call(
            &state,
            Method::GET,
            "/v1/connections/openai",
            Some(1000),
            &[b'x'; 65],
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "payload_too_large");
        let (status, _) = call(
            &state,
            Method::GET,
            "/v1/connections/openai",
            Some(1000),
            &[b'x'; 64],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        reason: String,
    }

    #[tokio::test]
    async fn read_json_refuses_unknown_fields_and_oversize() {
        let ok: Sample = read_json(Body::from(r#"{"reason":"x"}"#), 64)
            .await
            .unwrap();
        assert_eq!(ok.reason, "x");
        let unknown = read_json::<Sample>(Body::from(r#"{"reason":"x","extra":1}"#), 64).await;
        assert!(matches!(unknown, Err(ApiError::BadRequest { .. })));
        let big = read_json::<Sample>(Body::from(vec![b' '; 100]), 64).await;
        assert!(
            matches!(big, Err(ApiError::PayloadTooLarge { .. })),
            "{big:?}"
        );
    }
}
