//! Unit tests of `launch`: the x11vnc start against a real Xvfb and stand-ins, Chromium's
//! sandbox decision, its singleton lock.

use super::*;

/// Through the RFB handshake (security None) to the server's first framebuffer update.
async fn first_framebuffer_update(socket: &Path) -> (u16, u16) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    let mut banner = [0u8; 12];
    s.read_exact(&mut banner).await.expect("banner");
    assert_eq!(&banner, b"RFB 003.008\n");
    s.write_all(b"RFB 003.008\n").await.expect("version");
    let count = s.read_u8().await.expect("security count");
    let mut types = vec![0u8; usize::from(count)];
    s.read_exact(&mut types).await.expect("security types");
    assert!(types.contains(&1), "no security type None: {types:?}");
    s.write_all(&[1]).await.expect("choose None");
    assert_eq!(s.read_u32().await.expect("security result"), 0);
    s.write_all(&[1]).await.expect("ClientInit, shared");
    let (width, height) = (
        s.read_u16().await.expect("w"),
        s.read_u16().await.expect("h"),
    );
    let mut pixel_format = [0u8; 16];
    s.read_exact(&mut pixel_format).await.expect("pixel format");
    let name_len = s.read_u32().await.expect("name length");
    let mut name = vec![0u8; name_len as usize];
    s.read_exact(&mut name).await.expect("name");
    let mut request = vec![3, 0, 0, 0, 0, 0];
    request.extend_from_slice(&width.to_be_bytes());
    request.extend_from_slice(&height.to_be_bytes());
    s.write_all(&request)
        .await
        .expect("FramebufferUpdateRequest");
    assert_eq!(
        s.read_u8().await.expect("message type"),
        0,
        "FramebufferUpdate"
    );
    (width, height)
}

#[tokio::test]
async fn x11vnc_serves_rfb_on_its_private_unix_socket_and_no_tcp_port() {
    let (xvfb, x11vnc) = (Path::new("/usr/bin/Xvfb"), Path::new("/usr/bin/x11vnc"));
    if !xvfb.exists() || !x11vnc.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but Xvfb/x11vnc are missing"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = DesktopConfig {
        backend: DisplayBackend::XvfbX11vnc {
            xvfb: xvfb.into(),
            x11vnc: x11vnc.into(),
        },
        run_dir: dir.path().to_owned(),
        ..DesktopConfig::default()
    };
    // A symlink planted where the socket goes is replaced, its target left alone.
    let planted = dir.path().join("planted-target");
    std::fs::write(&planted, b"untouched").expect("target");
    std::os::unix::fs::symlink(&planted, dir.path().join(VNC_SOCKET)).expect("plant");
    let auth = XAuthority::create(dir.path(), None).expect("xauthority");
    let display = start_display(&cfg, &auth).await.expect("xvfb");
    let started = start_x11vnc(&cfg, x11vnc, display.number, &auth).await;
    let (child, target) = started.expect("x11vnc started");
    let socket = dir.path().join(VNC_SOCKET);
    let meta = std::fs::symlink_metadata(&socket).expect("socket");
    let size = first_framebuffer_update(&socket).await;
    let tcp = probe::tcp_listeners(child.pid, None);
    child.stop(cfg.stop_grace).await;
    display.child.stop(cfg.stop_grace).await;
    assert_eq!(target, VncTarget::Unix(socket.clone()));
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(size, (cfg.screen.width, cfg.screen.height));
    assert_eq!(tcp.expect("listeners"), vec![], "x11vnc listens on TCP");
    assert_eq!(std::fs::read(&planted).expect("target"), b"untouched");
}

/// A stand-in for x11vnc: a Python script that runs `body` with `unixsock` (its
/// `-unixsock` path) and `serve(sock)` (answers each client like a VNC server up to its
/// security offer) defined; and a config whose run dir lies beside it.
fn stand_in_x11vnc(dir: &Path, body: &str) -> (PathBuf, DesktopConfig) {
    let program = dir.join("x11vnc");
    let prelude = "#!/usr/bin/python3\n\
         import os, socket, sys, time\n\
         unixsock = sys.argv[sys.argv.index('-unixsock') + 1]\n\
         def serve(u):\n\
         \x20   while True:\n\
         \x20       c, _ = u.accept(); c.sendall(b'RFB 003.008\\n'); c.recv(12)\n\
         \x20       c.sendall(bytes([1, 1])); c.close()\n";
    std::fs::write(&program, format!("{prelude}{body}")).expect("stand-in");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run_dir = dir.join("run");
    std::fs::create_dir(&run_dir).expect("run dir");
    let cfg = DesktopConfig {
        run_dir,
        ..DesktopConfig::default()
    };
    (program, cfg)
}

/// The reason of a start refused with `ProbeRejected` for the VNC server.
fn vnc_refusal(result: Result<(ChildHandle, VncTarget), DesktopError>) -> String {
    match result {
        Err(DesktopError::ProbeRejected {
            child: "vnc",
            reason,
        }) => reason,
        other => panic!("not refused: {:?}", other.map(|(c, t)| (c.pid, t))),
    }
}

#[tokio::test]
async fn an_x11vnc_that_opens_a_tcp_port_is_refused_and_stopped() {
    // A stand-in for an x11vnc build that ignores `-rfbportv6 0`: it serves RFB on the
    // `-unixsock` path and also listens on a (loopback) TCP port.
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("x11vnc.pid");
    let (program, cfg) = stand_in_x11vnc(
        dir.path(),
        &format!(
            "open({pid_file:?}, 'w').write(str(os.getpid()))\n\
             tcp = socket.socket(); tcp.bind(('127.0.0.1', 0)); tcp.listen()\n\
             u = socket.socket(socket.AF_UNIX); u.bind(unixsock); u.listen()\n\
             serve(u)\n"
        ),
    );
    let auth = XAuthority::create(&cfg.run_dir, None).expect("xauthority");
    let result = start_x11vnc(&cfg, &program, 99, &auth).await;
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the stand-in ran")
        .parse()
        .expect("pid");
    let reason = vnc_refusal(result);
    assert!(
        reason.starts_with("x11vnc listens on TCP 127.0.0.1:")
            && reason.ends_with("; it must serve RFB on its Unix socket only"),
        "{reason}"
    );
    assert!(!pid_alive(pid), "the refused x11vnc still runs");
}

#[tokio::test]
async fn a_vnc_socket_bound_by_another_process_is_refused() {
    // A stand-in for x11vnc whose socket path another process (here its own forked
    // child, which answers like a VNC server) binds instead of it.
    // Each process writes its pid before the socket is bound, so both files exist by the time
    // the daemon can see the squatter (and kills the stand-in, perhaps before it ran on).
    let dir = tempfile::tempdir().expect("tempdir");
    let own_pid = dir.path().join("own.pid");
    let squatter_pid = dir.path().join("squatter.pid");
    let (program, cfg) = stand_in_x11vnc(
        dir.path(),
        &format!(
            "open({own_pid:?}, 'w').write(f'{{os.getpid()}}')\n\
             child = os.fork()\n\
             if child == 0:\n\
             \x20   open({squatter_pid:?}, 'w').write(f'{{os.getpid()}}')\n\
             \x20   u = socket.socket(socket.AF_UNIX); u.bind(unixsock); u.listen()\n\
             \x20   serve(u)\n\
             time.sleep(60)\n"
        ),
    );
    let auth = XAuthority::create(&cfg.run_dir, None).expect("xauthority");
    let result = start_x11vnc(&cfg, &program, 99, &auth).await;
    let read_pid = |path: &std::path::Path| -> i32 {
        let text = std::fs::read_to_string(path).expect("the stand-in ran");
        text.parse().expect("pid")
    };
    let (own, squatter) = (read_pid(&own_pid), read_pid(&squatter_pid));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(squatter),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(
        vnc_refusal(result),
        format!(
            "{} was bound by another process, not by vnc (pid {own})",
            cfg.run_dir.join(VNC_SOCKET).display()
        )
    );
    assert!(!pid_alive(own), "the refused x11vnc still runs");
}

#[test]
fn chromium_sandbox_decision() {
    use ChromiumSandbox::{Auto, Off, On};
    let no = || Some("no user namespaces".to_string());
    assert!(matches!(decide_chromium_sandbox(Auto, 65534, None), Ok(On)));
    assert!(matches!(
        decide_chromium_sandbox(Auto, 65534, no()),
        Ok(Off)
    ));
    assert!(matches!(decide_chromium_sandbox(On, 65534, None), Ok(On)));
    assert!(matches!(
        decide_chromium_sandbox(On, 65534, no()),
        Err(DesktopError::SandboxUnavailable { reason }) if reason == "no user namespaces"
    ));
    assert!(matches!(decide_chromium_sandbox(Off, 65534, None), Ok(Off)));
    assert!(matches!(decide_chromium_sandbox(Off, 0, no()), Ok(Off)));
    // Only `On` puts Chromium's sandbox on; an unresolved `Auto` keeps --no-sandbox.
    for (mode, flagged) in [(On, false), (Off, true), (Auto, true)] {
        let cfg = DesktopConfig {
            chromium_sandbox: mode,
            ..DesktopConfig::default()
        };
        let args = chromium_args(&cfg, false);
        assert_eq!(
            args.iter().any(|a| a == "--no-sandbox"),
            flagged,
            "{mode:?}"
        );
    }
}

#[test]
fn a_small_dev_shm_keeps_chromiums_shared_memory_out_of_it() {
    let flagged = |args: &[String]| {
        args.iter()
            .filter(|a| *a == "--disable-dev-shm-usage")
            .count()
    };
    let cfg = DesktopConfig::default();
    assert_eq!(flagged(&chromium_args(&cfg, true)), 1);
    assert_eq!(flagged(&chromium_args(&cfg, false)), 0);
    // Given by the operator already: not twice.
    let cfg = DesktopConfig {
        chromium_extra_args: vec!["--disable-dev-shm-usage".into()],
        ..DesktopConfig::default()
    };
    assert_eq!(flagged(&chromium_args(&cfg, true)), 1);
    // The start URL stays last.
    let args = chromium_args(&cfg, true);
    assert_eq!(args.last(), Some(&cfg.start_url));
    // A missing /dev/shm is as good as a small one; a large tmpfs is not.
    assert!(dev_shm_too_small(Path::new("/nonexistent/dev/shm")));
    let tmp = tempfile::tempdir().expect("tmp");
    let fs = nix::sys::statvfs::statvfs(tmp.path()).expect("statvfs");
    let size = fs.blocks().saturating_mul(fs.fragment_size());
    assert_eq!(dev_shm_too_small(tmp.path()), size < MIN_DEV_SHM_BYTES);
}

#[test]
fn singleton_lock_targets() {
    let cases = [
        ("host-123", Some(("host", 123))),
        ("my-host-name-42", Some(("my-host-name", 42))),
        ("host-0", None),
        ("host-", None),
        ("host", None),
        ("host--5", Some(("host-", 5))),
        ("", None),
    ];
    for (target, want) in cases {
        assert_eq!(parse_singleton_lock(target), want, "{target:?}");
    }
}

#[test]
fn stale_lock_of_dead_pid_is_removed_live_one_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = hostname().expect("hostname");
    // A pid that surely is dead: a child we ran and reaped.
    let dead = std::process::Command::new("true")
        .spawn()
        .and_then(|mut c| {
            let pid = c.id();
            c.wait().map(|_| pid)
        });
    let dead = dead.expect("run true");
    std::os::unix::fs::symlink(format!("{host}-{dead}"), dir.path().join("SingletonLock"))
        .expect("lock");
    std::os::unix::fs::symlink(
        "/nonexistent/SingletonSocket",
        dir.path().join("SingletonSocket"),
    )
    .expect("socket");
    std::os::unix::fs::symlink("123", dir.path().join("SingletonCookie")).expect("cookie");
    clear_stale_singleton(dir.path()).expect("cleared");
    for name in SINGLETON_FILES {
        assert!(
            std::fs::symlink_metadata(dir.path().join(name)).is_err(),
            "{name} left"
        );
    }
    // Our own (live, not chromium) pid: stale too, since the pid was reused.
    std::os::unix::fs::symlink(
        format!("{host}-{}", std::process::id()),
        dir.path().join("SingletonLock"),
    )
    .expect("lock");
    clear_stale_singleton(dir.path()).expect("cleared");
    assert!(std::fs::symlink_metadata(dir.path().join("SingletonLock")).is_err());
}
