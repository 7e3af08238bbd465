//! The control listener's connection slots: `max_connections` in all, the last
//! `platform_reserve` of them kept for the platform (see `serve`).

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::Router;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::Layer as _;

use super::{BearerToken, RemoteAddr};
use crate::api::error::ApiError;
use crate::api::ratelimit::LogLimiter;

/// The general slots and the platform's reserve.
pub(super) struct Slots {
    general: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
}

impl Slots {
    pub(super) fn new(general: usize, reserve: usize) -> Self {
        Self {
            general: Arc::new(Semaphore::new(general)),
            reserve: Arc::new(Semaphore::new(reserve)),
        }
    }

    /// A general slot if one is free, else one of the reserve, else none.
    pub(super) fn take(&self) -> Option<Slot> {
        let general = self.general.clone().try_acquire_owned().ok();
        general.map(Slot::general).or_else(|| {
            let permit = self.reserve.clone().try_acquire_owned().ok()?;
            Some(Slot {
                _permit: permit,
                reserved: true,
            })
        })
    }
}

/// The slot a connection holds until it ends.
#[derive(Debug)]
pub(super) struct Slot {
    /// Held, never read: the slot is free again when it drops.
    _permit: OwnedSemaphorePermit,
    /// One of the platform's reserve: each request is then checked by a [`ReserveGate`].
    pub(super) reserved: bool,
}

impl Slot {
    fn general(permit: OwnedSemaphorePermit) -> Self {
        Self {
            _permit: permit,
            reserved: false,
        }
    }
}

/// The check of each request on a connection accepted into the platform's reserve.
#[derive(Clone)]
pub(super) struct ReserveGate {
    slot: Arc<Mutex<Slot>>,
    general: Arc<Semaphore>,
    token: Arc<BearerToken>,
    log_limiter: Arc<LogLimiter>,
}

impl ReserveGate {
    /// The gate of a connection that holds `slot`, one of the reserve.
    pub(super) fn new(
        slot: Slot,
        slots: &Slots,
        token: Arc<BearerToken>,
        log_limiter: Arc<LogLimiter>,
    ) -> Self {
        debug_assert!(slot.reserved);
        Self {
            slot: Arc::new(Mutex::new(slot)),
            general: slots.general.clone(),
            token,
            log_limiter,
        }
    }

    /// The connection's slot, for its task to hold until the connection ends.
    pub(super) fn slot(&self) -> Arc<Mutex<Slot>> {
        self.slot.clone()
    }

    /// `router`, with every request through [`ReserveGate::admits`] first; one it does not
    /// admit is answered `503 too_many_connections`, and the connection closed.
    pub(super) fn guard(self, router: Router) -> Router {
        let gate = middleware::from_fn(move |request: Request, next: Next| {
            let gate = self.clone();
            async move {
                if gate.admits(&request) {
                    return next.run(request).await;
                }
                if let Some(suppressed) = gate.log_limiter.check() {
                    let remote = request.extensions().get::<RemoteAddr>().map(|r| r.0);
                    tracing::warn!(remote = ?remote, suppressed, "control request refused: too many connections, the rest are kept for the platform");
                }
                let mut response = ApiError::TooManyConnections.into_response();
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
        });
        Router::new().fallback_service(gate.layer(router))
    }

    /// Whether `request` may be served: the platform's always; another once the
    /// connection holds a general slot, taken now if one is free (the reserved one is then
    /// given back).
    fn admits(&self, request: &Request) -> bool {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if !slot.reserved || is_platform_request(&self.token, request) {
            return true;
        }
        match self.general.clone().try_acquire_owned() {
            Ok(permit) => {
                *slot = Slot::general(permit);
                true
            }
            Err(_) => false,
        }
    }
}

/// A request the platform's reserve is kept for: under `/v1/`, with the bearer token.
fn is_platform_request(token: &BearerToken, request: &Request) -> bool {
    request.uri().path().starts_with("/v1/")
        && token.verify(
            request
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn request(path: &str, auth: Option<&str>) -> Request {
        let mut request = Request::builder().uri(path);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        request.body(Body::empty()).unwrap()
    }

    fn gate(slots: &Slots) -> ReserveGate {
        let slot = slots
            .take()
            .filter(|s| s.reserved)
            .expect("a reserved slot");
        let token = BearerToken::from_bytes(TOKEN.as_bytes()).unwrap();
        ReserveGate::new(slot, slots, Arc::new(token), Arc::default())
    }

    /// General slots first, then the reserve, then none.
    #[test]
    fn the_reserve_is_taken_only_once_the_general_slots_are() {
        let slots = Slots::new(2, 1);
        let taken: Vec<Option<Slot>> = (0..4).map(|_| slots.take()).collect();
        let reserved: Vec<Option<bool>> = taken
            .iter()
            .map(|s| s.as_ref().map(|s| s.reserved))
            .collect();
        assert_eq!(reserved, [Some(false), Some(false), Some(true), None]);
        drop(taken);
        assert!(slots.take().is_some_and(|s| !s.reserved));
    }

    /// On a reserved slot, only the platform's requests are served while every general
    /// slot is taken: under `/v1/` with the token, not a viewer's request, nor one under
    /// `/v1/` without the token or with another, nor the token on another path.
    #[test]
    fn a_reserved_slot_serves_only_the_platform_while_the_general_slots_are_full() {
        let slots = Slots::new(1, 1);
        let _viewer = slots.take().unwrap();
        let gate = gate(&slots);
        let bearer = format!("Bearer {TOKEN}");
        for (path, auth, admitted) in [
            ("/v1/identity", Some(bearer.as_str()), true),
            ("/v1/events", Some("bearer 0123456789abcdef0123"), true),
            ("/v1/identity", None, false),
            (
                "/v1/identity",
                Some("Bearer wrong-token-wrong-token"),
                false,
            ),
            ("/takeover/assets/viewer.js", None, false),
            ("/takeover/novnc/core/rfb.js", Some(bearer.as_str()), false),
            ("/v1", Some(bearer.as_str()), false),
        ] {
            assert_eq!(
                gate.admits(&request(path, auth)),
                admitted,
                "{path} {auth:?}"
            );
        }
        assert!(gate.slot().lock().unwrap().reserved);
    }

    /// A connection on a reserved slot that gets another request once a general slot is
    /// free (an edge reusing the platform's connection for a viewer) moves to that slot and
    /// gives the reserved one back.
    #[test]
    fn another_request_moves_the_connection_to_a_general_slot_come_free() {
        let slots = Slots::new(1, 1);
        let viewer = slots.take().unwrap();
        let gate = gate(&slots);
        assert!(slots.take().is_none(), "all taken");
        drop(viewer);
        assert!(gate.admits(&request("/takeover/assets/viewer.js", None)));
        assert!(!gate.slot().lock().unwrap().reserved);
        assert!(
            slots.take().is_some_and(|s| s.reserved),
            "the reserved slot is free again, the general one is the connection's"
        );
        // From then on the connection serves anything.
        assert!(gate.admits(&request("/takeover/assets/viewer.css", None)));
    }

    /// What a request the gate does not admit is told: the documented refusal, and the
    /// connection is closed after it (its slot goes back to the reserve).
    #[tokio::test]
    async fn a_refused_request_is_too_many_connections_and_closes_the_connection() {
        let slots = Slots::new(0, 1);
        let app = gate(&slots).guard(Router::new().route("/{*any}", get(|| async { "served" })));
        let response = app
            .clone()
            .oneshot(request("/takeover/assets/viewer.js", None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "too_many_connections");
        let response = app
            .oneshot(request("/v1/identity", Some(&format!("Bearer {TOKEN}"))))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!response.headers().contains_key(header::CONNECTION));
    }
}
