//! The one place that maps domain errors to the wire, for both endpoints (the agent's
//! socket and the platform's control endpoint).
//!
//! Every error response is `{"error": {"code": "...", "message": "..."}}` with a stable
//! `code` (Grexal's where Grexal fixes one) and a fixed public `message`. The `Display` of
//! an `ApiError` and its `#[source]` chain are for our log only and never reach a client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::bundle::BundleError;
use crate::store::{ConnectError, StoreError};

/// Everything the API layer can fail with: wire errors (client mistakes and refusals) and
/// the API's own setup failures (binding the socket), which never reach a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("connection is not declared")]
    ConnectionNotFound,
    #[error("connect() is not valid for a {mode} connection")]
    InvalidAuthMode { mode: &'static str },
    #[error("credential has not arrived")]
    CredentialMissing,
    #[error("credentials are not installed yet")]
    NotReady,
    #[error("peer uid {uid} may not read credentials")]
    Forbidden { uid: u32 },
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body over the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("bad request: {reason}")]
    BadRequest { reason: &'static str },
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("request not completed in time")]
    RequestTimeout,
    #[error("too many connections")]
    TooManyConnections,
    #[error("bundle refused")]
    Bundle(#[source] BundleError),
    #[error("bundle contents refused")]
    BundleContents(#[source] crate::credentials::CredentialsError),
    #[error("this daemon does not accept bundles")]
    BundlesDisabled,
    /// Where a connection's files go, the credentials root holds an entry of another user,
    /// which the injector does not remove; nothing was changed.
    #[error("credentials not written")]
    CredentialsDirForeign(#[source] crate::inject::InjectError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),

    // Setup failures (`bind`); mapped to `internal` if they ever met a response.
    #[error("unsafe socket directory {path}: {problem}")]
    UnsafeDir { path: String, problem: String },
    #[error("refusing to replace {path}: it is not a socket")]
    NotASocket { path: String },
    #[error("refusing to replace {path}: something is listening on it (another daemon?)")]
    SocketInUse { path: String },
    #[error("cannot set up socket {path}")]
    Socket {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ApiError {
    /// The stable wire code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::ConnectionNotFound => "connection_not_found",
            ApiError::InvalidAuthMode { .. } => "invalid_auth_mode",
            ApiError::CredentialMissing => "credential_missing",
            ApiError::NotReady => "not_ready",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::TooManyConnections => "too_many_connections",
            ApiError::Bundle(e) => e.code(),
            ApiError::BundleContents(_) => "bundle_contents",
            ApiError::BundlesDisabled => "bundles_disabled",
            ApiError::CredentialsDirForeign(_) => "credentials_dir_foreign",
            ApiError::Internal(_)
            | ApiError::UnsafeDir { .. }
            | ApiError::NotASocket { .. }
            | ApiError::SocketInUse { .. }
            | ApiError::Socket { .. } => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::ConnectionNotFound | ApiError::NotFound => StatusCode::NOT_FOUND,
            // The request is well-formed and the connection exists; it is the wrong call
            // for the connection's current mode, which is a conflict with its state.
            ApiError::InvalidAuthMode { .. } => StatusCode::CONFLICT,
            ApiError::CredentialMissing | ApiError::NotReady | ApiError::TooManyConnections => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Bundle(e) => bundle_status(e),
            ApiError::BundleContents(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BundlesDisabled => StatusCode::CONFLICT,
            // The sandbox's own state, which only its operator can fix.
            ApiError::CredentialsDirForeign(_)
            | ApiError::Internal(_)
            | ApiError::UnsafeDir { .. }
            | ApiError::NotASocket { .. }
            | ApiError::SocketInUse { .. }
            | ApiError::Socket { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The public message: fixed text per code, never built from internal errors or input.
    pub fn public_message(&self) -> &'static str {
        match self {
            ApiError::ConnectionNotFound => "no connection with this id is declared in grexal.json",
            ApiError::InvalidAuthMode { .. } => {
                "this connection's auth_mode has no credential to connect to (browser_login: use request_takeover)"
            }
            ApiError::CredentialMissing => "the credential for this connection has not been provided",
            ApiError::NotReady => "credentials are not installed yet",
            ApiError::Forbidden { .. } => "this process may not read credentials",
            ApiError::Unauthorized => "a valid bearer token is required",
            ApiError::NotFound => "no such route",
            ApiError::MethodNotAllowed => "method not allowed on this route",
            ApiError::PayloadTooLarge { .. } => "request body too large",
            ApiError::BadRequest { .. } => "malformed request",
            ApiError::UnsupportedMediaType => "unsupported content type",
            ApiError::RequestTimeout => "request not received in time",
            ApiError::TooManyConnections => "too many connections; retry",
            ApiError::Bundle(e) => bundle_message(e),
            ApiError::BundleContents(_) => "bundle contents do not match the manifest",
            ApiError::BundlesDisabled => "this daemon does not accept sealed bundles",
            ApiError::CredentialsDirForeign(_) => {
                "the credentials directory holds another user's entry where a connection's files go; the previous credentials stay"
            }
            ApiError::Internal(_) | ApiError::UnsafeDir { .. } | ApiError::NotASocket { .. } | ApiError::SocketInUse { .. } | ApiError::Socket { .. } => {
                "internal error"
            }
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Vec<u8> {
        let body =
            serde_json::json!({"error": {"code": self.code(), "message": self.public_message()}});
        // Serializing a map of two static strings cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }

    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(error))
    }
}

/// `bundle_replayed` is a conflict with the installed version; `bundle_oversized` is 413;
/// bytes that are not a bundle at all are 400; a well-formed bundle that is refused
/// (tampered, untrusted, expired, for another sandbox or key) is 422.
fn bundle_status(error: &BundleError) -> StatusCode {
    match error {
        BundleError::Replayed { .. } => StatusCode::CONFLICT,
        BundleError::Oversized { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        BundleError::Malformed(_) | BundleError::Unsupported(_) => StatusCode::BAD_REQUEST,
        BundleError::Tampered
        | BundleError::Untrusted
        | BundleError::Expired { .. }
        | BundleError::WrongSandbox { .. }
        | BundleError::WrongKey => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn bundle_message(error: &BundleError) -> &'static str {
    match error {
        BundleError::Malformed(_) => "bundle is malformed",
        BundleError::Tampered => "bundle was altered or does not decrypt",
        BundleError::Untrusted => "bundle is not signed by a trusted platform key",
        BundleError::Expired { .. } => "bundle has expired",
        BundleError::WrongSandbox { .. } => "bundle was sealed for another sandbox",
        BundleError::WrongKey => "bundle was sealed to another sandbox key",
        BundleError::Replayed { .. } => "bundle version is not newer than the installed one",
        BundleError::Oversized { .. } => "bundle is too large",
        BundleError::Unsupported(_) => "bundle format is not supported",
    }
}

impl From<ConnectError> for ApiError {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::NotFound => ApiError::ConnectionNotFound,
            ConnectError::InvalidAuthMode { mode } => ApiError::InvalidAuthMode { mode },
            ConnectError::Missing => ApiError::CredentialMissing,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NoOpener => ApiError::BundlesDisabled,
            StoreError::Bundle(e) => ApiError::Bundle(e),
            StoreError::Contents(e) => ApiError::BundleContents(e),
            StoreError::Inject(e @ crate::inject::InjectError::Foreign { .. }) => {
                ApiError::CredentialsDirForeign(e)
            }
            StoreError::Inject(e) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error()
            && !matches!(
                self,
                ApiError::TooManyConnections | ApiError::CredentialMissing | ApiError::NotReady
            )
        {
            // The chain goes to our log only.
            tracing::error!(code = self.code(), error = %error_chain(&self), "request failed");
        } else {
            tracing::debug!(
                code = self.code(),
                status = status.as_u16(),
                "request refused"
            );
        }
        let mut response = (status, self.body()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// `error: cause: cause`, on one line, for logs and the daemon's last words. A control
/// character is written as its escape (`\n`, `\u{1b}`): a cause may carry text from
/// elsewhere (an OS message, a CDP error relayed by the browser, a peer's HTTP error), and
/// a raw newline in it would print as a log line of its own, forged.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    fn push_escaped(text: &mut String, part: &str) {
        for c in part.chars() {
            if c.is_control() {
                text.extend(c.escape_default());
            } else {
                text.push(c);
            }
        }
    }
    let mut text = String::new();
    push_escaped(&mut text, &error.to_string());
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        push_escaped(&mut text, &cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_table() {
        let io = || std::io::Error::other("secret detail /etc/shadow");
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::ConnectionNotFound, 404, "connection_not_found"),
            (
                ApiError::InvalidAuthMode {
                    mode: "browser_login",
                },
                409,
                "invalid_auth_mode",
            ),
            (ApiError::CredentialMissing, 503, "credential_missing"),
            (ApiError::NotReady, 503, "not_ready"),
            (ApiError::Forbidden { uid: 7 }, 403, "forbidden"),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::NotFound, 404, "not_found"),
            (ApiError::MethodNotAllowed, 405, "method_not_allowed"),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (ApiError::BadRequest { reason: "x" }, 400, "bad_request"),
            (
                ApiError::UnsupportedMediaType,
                415,
                "unsupported_media_type",
            ),
            (ApiError::RequestTimeout, 408, "request_timeout"),
            (ApiError::TooManyConnections, 503, "too_many_connections"),
            (
                ApiError::Bundle(BundleError::Replayed {
                    version: 1,
                    installed: 2,
                }),
                409,
                "bundle_replayed",
            ),
            (
                ApiError::Bundle(BundleError::Oversized { size: 2, limit: 1 }),
                413,
                "bundle_oversized",
            ),
            (
                ApiError::Bundle(BundleError::Malformed("m".into())),
                400,
                "bundle_malformed",
            ),
            (
                ApiError::Bundle(BundleError::Unsupported("u".into())),
                400,
                "bundle_unsupported",
            ),
            (
                ApiError::Bundle(BundleError::Tampered),
                422,
                "bundle_tampered",
            ),
            (
                ApiError::Bundle(BundleError::Untrusted),
                422,
                "bundle_untrusted",
            ),
            (
                ApiError::Bundle(BundleError::Expired {
                    expires_at: 1,
                    now: 2,
                }),
                422,
                "bundle_expired",
            ),
            (
                ApiError::Bundle(BundleError::WrongSandbox {
                    expected: "a".into(),
                    found: "b".into(),
                }),
                422,
                "bundle_wrong_sandbox",
            ),
            (
                ApiError::Bundle(BundleError::WrongKey),
                422,
                "bundle_wrong_key",
            ),
            (
                ApiError::BundleContents(crate::credentials::CredentialsError::Syntax {
                    detail: "d".into(),
                }),
                422,
                "bundle_contents",
            ),
            (ApiError::BundlesDisabled, 409, "bundles_disabled"),
            (
                ApiError::from(StoreError::Inject(crate::inject::InjectError::Foreign {
                    connection: "db".into(),
                    path: "/etc/grexal/db/".into(),
                    uid: 12345,
                })),
                500,
                "credentials_dir_foreign",
            ),
            (
                ApiError::from(StoreError::Inject(crate::inject::InjectError::Io {
                    connection: "db".into(),
                    source: io(),
                })),
                500,
                "internal",
            ),
            (ApiError::internal(io()), 500, "internal"),
            (
                ApiError::Socket {
                    path: "/p".into(),
                    source: io(),
                },
                500,
                "internal",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{code}");
            assert_eq!(error.code(), code);
            let body: serde_json::Value = serde_json::from_slice(&error.body()).unwrap();
            assert_eq!(body["error"]["code"], code);
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                !message.contains("secret detail") && !message.contains("/etc"),
                "{message}"
            );
            assert_eq!(body.as_object().unwrap().len(), 1);
        }
    }

    #[test]
    fn internal_chain_is_logged_text_only() {
        let error = ApiError::internal(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&error), "internal error: disk on fire");
        // A cause's control characters are escaped: it stays one line.
        let forged = ApiError::internal(std::io::Error::other(
            "no\n2026-11-25T00:00:00Z  INFO grexal_sidecar::daemon: FORGED\r\u{1b}[2K",
        ));
        assert_eq!(
            error_chain(&forged),
            "internal error: no\\n2026-11-25T00:00:00Z  INFO grexal_sidecar::daemon: FORGED\\r\\u{1b}[2K"
        );
        assert_eq!(error.public_message(), "internal error");
    }
}
