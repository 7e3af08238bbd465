//! Tracing setup, process hardening, and the service manager's readiness protocol.
//!
//! Logs go to stderr (the journal under systemd, the container log otherwise), as text
//! or one JSON object per line. Hardening makes the daemon non-dumpable and forbids core
//! files: its memory holds opened credentials and the sandbox's private key.
//!
//! Some dependencies log whole messages at debug or trace: chromiumoxide every CDP command
//! and response (`Storage.getCookies` answers with every cookie's value), tungstenite every
//! WebSocket frame, reqwest raw socket bytes. [`PAYLOAD_CAPS`] holds them at info whatever
//! `--log` says, in a filter of its own that the user's directives cannot override.

use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::cli::LogFormat;

/// Targets whose debug or trace events carry message payloads, and the most they may log
/// (a more specific target wins). Checked against every crate of Cargo.lock that logs:
/// hyper logs nothing without `--cfg hyper_unstable_tracing`, hyper-util, tower and axum log
/// connection and pool events only, fastwebsockets does not log, and h2 is not a
/// dependency.
pub const PAYLOAD_CAPS: &[(&str, LevelFilter)] = &[
    // `Sending {:?}` / `Received {:?}` at trace: every CDP command and response.
    ("chromiumoxide", LevelFilter::INFO),
    // Every CDP message it cannot parse, whole, at debug.
    ("chromiumoxide::conn::raw_ws", LevelFilter::OFF),
    // `received frame` / `Received message` / `Sending frame` at trace, with payloads
    // (through the `log` crate, whose records are logged under their module path).
    ("tungstenite", LevelFilter::INFO),
    ("async_tungstenite", LevelFilter::INFO),
    // `read: ...` / `write: ...` of raw socket bytes at trace (`connection_verbose`).
    ("reqwest", LevelFilter::INFO),
];

/// The filter made of [`PAYLOAD_CAPS`]; every other target passes (the user's filter
/// decides).
pub fn payload_caps() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(PAYLOAD_CAPS.iter().copied())
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("prctl(PR_SET_DUMPABLE, 0) failed")]
    Dumpable(#[source] nix::Error),
    #[error("setrlimit(RLIMIT_CORE, 0) failed")]
    CoreLimit(#[source] nix::Error),
}

/// Parses a filter in `EnvFilter` syntax (`info`, `grexal_sidecar=debug,warn`), so the
/// configuration can reject a bad one before anything starts.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(filter).map_err(|source| TelemetryError::Filter {
        filter: filter.to_owned(),
        source,
    })
}

/// Installs the global subscriber: stderr, `filter` under [`PAYLOAD_CAPS`], text or JSON
/// lines. Call once, first.
pub fn init(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    init_with_writer(format, filter, std::io::stderr)
}

/// [`init`] with another writer (tests read what the daemon would log). Records of the
/// `log` crate (tungstenite's) are forwarded under their module path.
pub fn init_with_writer<W>(format: LogFormat, filter: &str, writer: W) -> Result<(), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    subscriber(format, filter, writer)?
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.into()))
}

type Filtered = Layered<EnvFilter, Layered<Targets, Registry>>;

/// The daemon's subscriber, not installed: [`payload_caps`], then the user's `filter`,
/// then the formatter writing to `writer`. An event is logged only if both filters let it
/// through.
pub fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Result<impl Subscriber + Send + Sync + 'static, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = parse_filter(filter)?;
    let output: Box<dyn Layer<Filtered> + Send + Sync> = match format {
        LogFormat::Text => Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer),
        ),
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(writer),
        ),
    };
    Ok(Registry::default()
        .with(payload_caps())
        .with(filter)
        .with(output))
}

/// Makes the process non-dumpable (no core dump, no `ptrace` attach and no
/// `/proc/<pid>/mem` or `environ` reads by the same uid) and sets `RLIMIT_CORE` to 0.
///
/// Children inherit `RLIMIT_CORE = 0` (wanted: the agent holds the same credentials) but
/// not non-dumpability, which `execve` resets for an ordinary program.
pub fn harden_process() -> Result<(), TelemetryError> {
    nix::sys::prctl::set_dumpable(false).map_err(TelemetryError::Dumpable)?;
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid, initialised struct. (libc directly: nix's
    // `resource` feature is not enabled.)
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(TelemetryError::CoreLimit(nix::Error::last()));
    }
    Ok(())
}

/// Tells systemd (`Type=notify`) the daemon is ready: call once credentials are in
/// place and the socket is bound. A no-op without `NOTIFY_SOCKET`. A failure is logged,
/// not returned: systemd then times the start out, which is the right outcome.
pub fn notify_ready() {
    notify(sd_notify::NotifyState::Ready, "READY=1");
}

/// Tells systemd the daemon is shutting down. A no-op without `NOTIFY_SOCKET`.
pub fn notify_stopping() {
    notify(sd_notify::NotifyState::Stopping, "STOPPING=1");
}

fn notify(state: sd_notify::NotifyState<'_>, what: &'static str) {
    // `unset_env = false`: the variable is needed again for STOPPING=1; it never reaches
    // the agent (agent::build_env drops it).
    match sd_notify::notify(false, &[state]) {
        Ok(()) => tracing::debug!(state = what, "notified the service manager"),
        Err(error) => tracing::warn!(state = what, %error, "notifying the service manager failed"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    /// What the daemon logs with `filter`, for the payload-dumping events of the capped
    /// crates (each carrying "CANARY") and two that the caps let through.
    fn logged(format: LogFormat, filter: &str) -> String {
        let out = Captured::default();
        let subscriber = subscriber(format, filter, out.clone()).expect("subscriber");
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "chromiumoxide::conn", "Received CANARY-cdp-response");
            tracing::trace!(target: "chromiumoxide::conn", "Sending CANARY-cdp-command");
            tracing::debug!(
                target: "chromiumoxide::conn::raw_ws::parse_errors",
                msg = "CANARY-raw",
                "Failed to parse raw WS message"
            );
            tracing::info!(target: "chromiumoxide::conn::raw_ws::parse_errors", "CANARY-raw-info");
            tracing::trace!(target: "tungstenite::protocol", "Received message CANARY-ws");
            tracing::trace!(target: "tungstenite::protocol::frame", "received frame CANARY-frame");
            tracing::debug!(target: "tungstenite::protocol", "Received close frame CANARY-close");
            tracing::trace!(target: "async_tungstenite", "CANARY-async-ws");
            tracing::trace!(target: "reqwest::connect::verbose", "read: CANARY-bytes");
            tracing::info!(target: "chromiumoxide::handler", "control-dependency-info");
            tracing::trace!(target: "grexal_sidecar::takeover", "control-ours-trace");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).expect("utf-8");
        text
    }

    #[test]
    fn payload_dumping_targets_are_capped_whatever_the_filter() {
        let filters = [
            "trace",
            "chromiumoxide=trace,tungstenite=trace",
            // More specific than the caps' own targets, and every capped crate named.
            "trace,chromiumoxide::conn=trace,chromiumoxide::conn::raw_ws::parse_errors=trace,\
             tungstenite::protocol=trace,async_tungstenite=trace,reqwest::connect=trace",
        ];
        for format in [LogFormat::Text, LogFormat::Json] {
            for filter in filters {
                let log = logged(format, filter);
                assert!(
                    !log.contains("CANARY"),
                    "{format:?} {filter:?} let a payload through:\n{log}"
                );
                // The caps hold those crates at info; they do not silence them.
                assert!(
                    log.contains("control-dependency-info"),
                    "{format:?} {filter:?}:\n{log}"
                );
                // Our own events follow the user's filter alone.
                assert_eq!(
                    log.contains("control-ours-trace"),
                    filter.starts_with("trace"),
                    "{format:?} {filter:?}:\n{log}"
                );
            }
        }
    }

    #[test]
    fn filters_table() {
        for ok in ["info", "grexal_sidecar=debug,warn", "off", "trace"] {
            assert!(parse_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["grexal_sidecar=loud", "[[", "=info"] {
            assert!(
                matches!(parse_filter(bad), Err(TelemetryError::Filter { .. })),
                "{bad}"
            );
        }
    }
}
