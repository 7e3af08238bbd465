//! `GET /v1/events`: the event stream as server-sent events, the live takeover first.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{header, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio::sync::broadcast;

use super::ControlState;
use crate::api::server::ServerStop;
use crate::platform::events::PlatformEvent;

#[derive(Serialize)]
struct Lagged {
    r#type: &'static str,
    missed: u64,
}

fn sse_event(event: &PlatformEvent) -> Event {
    Event::default()
        .event(event.name())
        .data(serde_json::to_string(event).unwrap_or_default())
}

/// Server-sent events: `event: <name>` and `data: <json>` per event, keep-alive comments,
/// and `event: lagged` when this subscriber fell behind and missed events. A takeover live
/// when the subscriber arrives comes first, as a `takeover_requested` with a token pair of
/// its own (`TakeoverManager::subscribe`). The stream ends, with its last chunk, when the
/// server serving it stops.
///
/// `HEAD` (which axum routes here too) gets the same head and no subscription: it never
/// reads the stream, so it must not replay the live takeover, which would mint a token
/// pair and could retire one a viewer holds.
#[tracing::instrument(level = "debug", name = "events", skip_all)]
pub(super) async fn events(
    State(state): State<ControlState>,
    method: Method,
    server_stop: Option<Extension<ServerStop>>,
) -> Response {
    if method == Method::HEAD {
        return stream_response(&state, futures_util::stream::empty());
    }
    // Without a server (a test's `oneshot`), the stream ends with the event bus.
    let stop = server_stop
        .map(|Extension(ServerStop(stop))| stop)
        .unwrap_or_default();
    let (receiver, live) = match &state.takeovers {
        Some(manager) => manager.subscribe(state.store.events()),
        None => (state.store.events().subscribe(), None),
    };
    let live = futures_util::stream::iter(live.map(|event| Ok(sse_event(&event))));
    // Ends when the server stops, but only after what was published before the stop: the
    // daemon publishes `agent_exited` and then stops, and the platform must still hear it.
    // (`recv` may be Pending with an event buffered, when the task's budget is spent, hence
    // the `try_recv` once stopped.)
    let stream =
        futures_util::stream::unfold((receiver, stop), |(mut receiver, stop)| async move {
            let next = tokio::select! {
                biased;
                r = receiver.recv() => match r {
                    Ok(event) => Ok(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => Err(missed),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = stop.cancelled() => match receiver.try_recv() {
                    Ok(event) => Ok(event),
                    Err(broadcast::error::TryRecvError::Lagged(missed)) => Err(missed),
                    Err(_) => return None,
                },
            };
            let event = match next {
                Ok(event) => sse_event(&event),
                Err(missed) => {
                    let data = serde_json::to_string(&Lagged {
                        r#type: "lagged",
                        missed,
                    })
                    .unwrap_or_default();
                    Event::default().event("lagged").data(data)
                }
            };
            Some((Ok::<Event, Infallible>(event), (receiver, stop)))
        });
    stream_response(&state, live.chain(stream))
}

fn stream_response(
    state: &ControlState,
    stream: impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Response {
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(state.limits.keep_alive))
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}
