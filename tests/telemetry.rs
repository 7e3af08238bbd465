//! Process hardening, the global subscriber and sd_notify, in a test binary of their own:
//! each changes process-wide state (dumpable flag, rlimits, the global subscriber, the
//! environment variable sd_notify reads).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use grexal_sidecar::cli::LogFormat;
use grexal_sidecar::telemetry::{self, TelemetryError};

#[test]
fn hardening_makes_us_undumpable_without_core_files() {
    telemetry::harden_process().expect("harden");
    assert!(
        !nix::sys::prctl::get_dumpable().expect("get dumpable"),
        "still dumpable"
    );
    let mut limit = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: getrlimit writes into a valid struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) }, 0);
    assert_eq!((limit.rlim_cur, limit.rlim_max), (0, 0));
    // Children inherit the core limit: no core file of the agent either.
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -c"])
        .output()
        .expect("sh");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    // Idempotent.
    telemetry::harden_process().expect("harden again");
}

#[test]
fn subscriber_installs_once_and_rejects_bad_filters() {
    assert!(matches!(
        telemetry::init(LogFormat::Json, "grexal_sidecar=loud"),
        Err(TelemetryError::Filter { .. })
    ));
    telemetry::init(LogFormat::Json, "info").expect("first init");
    assert!(matches!(
        telemetry::init(LogFormat::Text, "info"),
        Err(TelemetryError::AlreadyInstalled(_))
    ));
}

#[test]
fn readiness_reaches_the_notify_socket_and_is_a_no_op_without_one() {
    // Without NOTIFY_SOCKET: nothing to do, nothing fails.
    std::env::remove_var("NOTIFY_SOCKET");
    telemetry::notify_ready();

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    std::env::set_var("NOTIFY_SOCKET", &path);
    let mut buf = [0u8; 256];

    telemetry::notify_ready();
    let n = socket.recv(&mut buf).expect("READY message");
    assert_eq!(
        std::str::from_utf8(&buf[..n]).expect("utf8").trim_end(),
        "READY=1"
    );

    telemetry::notify_stopping();
    let n = socket.recv(&mut buf).expect("STOPPING message");
    assert_eq!(
        std::str::from_utf8(&buf[..n]).expect("utf8").trim_end(),
        "STOPPING=1"
    );
    // Still set: STOPPING=1 needs it after READY=1.
    assert!(std::env::var_os("NOTIFY_SOCKET").is_some());
    std::env::remove_var("NOTIFY_SOCKET");
}
