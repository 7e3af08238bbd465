//! Tracing setup, process hardening, and the service manager's readiness protocol.
//!
//! Logs go to stderr (the journal under systemd, the container log otherwise), as text
//! or one JSON object per line. Hardening makes the daemon non-dumpable and forbids core
//! files: its memory holds opened credentials and the sandbox's private key.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

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

/// Installs the global subscriber: stderr, `filter`, text or JSON lines. Call once, first.
pub fn init(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let filter = parse_filter(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(TelemetryError::AlreadyInstalled)
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
    use super::*;

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
