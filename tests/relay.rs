//! The relay end to end: a real HTTP/1.1 server (hyper, as the daemon serves), real VNC
//! servers (x11vnc on TCP and on a Unix socket, Xvnc on a Unix socket), an independent RFB
//! client (vnc-rs) over WebSocket, and fake upstreams that record or flood bytes. Here the
//! whole framebuffer through the relay, the pipelined handshake, the view-only filter,
//! slow, idle and stopped viewers, and the viewer's bounded send buffer; the WebSocket
//! framing (control frames, fragments, masks, sizes) is in `relay_websocket.rs`.

#[path = "support/relay.rs"]
mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use grexal_sidecar::relay::{RelayEnd, RelayLimits, VncTarget};
use grexal_sidecar::rfb::{encode, Phase, RfbLimits, RfbParser};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Connects vnc-rs through the relay and waits until raw rectangles cover the whole screen.
async fn whole_framebuffer_through_relay(target: VncTarget) {
    whole_framebuffer_through_relay_offering(target, "binary").await
}

/// The same, offering `protocols` (with the pipelined handshake, vnc-rs does its handshake
/// against the relay's greeting instead of the server).
async fn whole_framebuffer_through_relay_offering(target: VncTarget, protocols: &str) {
    let mut server = start_relay_server(target, RelayLimits::default(), None).await;
    let (ws, resp) = ws_connect(server.addr, "/relay/view", Some(protocols))
        .await
        .unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "binary");
    let vnc = vnc::VncConnector::new(WsBytes::new(ws))
        .set_auth_method(async { Ok(String::new()) })
        .add_encoding(vnc::VncEncoding::Raw)
        .allow_shared(true)
        .set_pixel_format(vnc::PixelFormat::bgra())
        .build()
        .unwrap()
        .try_start()
        .await
        .unwrap()
        .finish()
        .unwrap();
    let start = Instant::now();
    let (mut screen, mut covered) = (0u64, 0u64);
    while screen == 0 || covered < screen {
        assert!(
            start.elapsed() < DEADLINE,
            "only {covered} of {screen} pixels arrived"
        );
        let _ = vnc.input(vnc::X11Event::FullRefresh).await;
        match tokio::time::timeout(Duration::from_secs(2), vnc.recv_event()).await {
            Ok(Ok(vnc::VncEvent::SetResolution(s))) => screen = s.width as u64 * s.height as u64,
            Ok(Ok(vnc::VncEvent::RawImage(r, data))) => {
                assert_eq!(data.len() as u64, r.width as u64 * r.height as u64 * 4);
                covered += r.width as u64 * r.height as u64;
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => panic!("vnc client failed: {e}"),
        }
    }
    assert_eq!(screen, 320 * 240);
    let _ = vnc.close().await;
    let handle = server.next_relay().await;
    let stats = handle.shutdown().await.unwrap();
    assert!(stats.server_bytes >= screen * 4, "{stats:?}");
    assert!(stats.client_messages >= 3);
    server.stop.cancel();
}

#[tokio::test]
async fn whole_framebuffer_from_x11vnc_over_tcp() {
    if !have("Xvfb") || !have("x11vnc") {
        return;
    }
    let vnc = start_x11vnc(None).await;
    whole_framebuffer_through_relay(vnc.target.clone()).await;
}

#[tokio::test]
async fn whole_framebuffer_from_x11vnc_over_unix_socket() {
    if !have("Xvfb") || !have("x11vnc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vnc = start_x11vnc(Some(dir.path())).await;
    whole_framebuffer_through_relay(vnc.target.clone()).await;
}

#[tokio::test]
async fn whole_framebuffer_from_xvnc_over_unix_socket() {
    if !have("Xvnc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vnc = start_xvnc(dir.path()).await;
    whole_framebuffer_through_relay(vnc.target.clone()).await;
}

#[tokio::test]
async fn whole_framebuffer_from_xvnc_with_the_pipelined_handshake() {
    if !have("Xvnc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vnc = start_xvnc(dir.path()).await;
    whole_framebuffer_through_relay_offering(vnc.target.clone(), PIPELINED).await;
}

#[tokio::test]
async fn whole_framebuffer_from_x11vnc_with_the_pipelined_handshake() {
    if !have("Xvfb") || !have("x11vnc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vnc = start_x11vnc(Some(dir.path())).await;
    whole_framebuffer_through_relay_offering(vnc.target.clone(), PIPELINED).await;
}

/// What our viewer page offers, less its token.
const PIPELINED: &str = "binary, grexal.pipelined-handshake.v1";

/// The next binary message, within the deadline.
async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => return b.to_vec(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_pipelined_handshake_greets_at_once_and_drops_the_answers() {
    let fake = fake_vnc().await;
    let mut server = start_relay_server(fake.target.clone(), RelayLimits::default(), None).await;
    let (mut ws, resp) = ws_connect(server.addr, "/relay/view", Some(PIPELINED))
        .await
        .unwrap();
    // Only `binary` is echoed.
    assert_eq!(resp.headers()["sec-websocket-protocol"], "binary");
    // The relay does the client's half with the server (the fake checks it: 3.8, None,
    // shared)...
    let mut up = fake.accept_handshake().await;
    // ...and the viewer gets the server's four messages, one per frame, before it has sent
    // a byte.
    assert_eq!(next_binary(&mut ws).await, b"RFB 003.008\n");
    assert_eq!(next_binary(&mut ws).await, [1, 1]);
    assert_eq!(next_binary(&mut ws).await, [0, 0, 0, 0]);
    let server_init = next_binary(&mut ws).await;
    assert_eq!(server_init.len(), 24);
    assert_eq!(&server_init[..4], [0, 64, 0, 48], "the fake's 64x48 screen");

    // The viewer's answers are checked and dropped: the server sees only what follows.
    let fbur = encode::framebuffer_update_request(false, 64, 48);
    let key = encode::key_event(true, 0x61);
    let input = [CLIENT_HANDSHAKE, &fbur, &key].concat();
    ws.send(Message::Binary(input.into())).await.unwrap();
    let got = read_upstream(&mut up, fbur.len()).await;
    assert_eq!(got, fbur);
    // View-only: the key event was dropped, so nothing more arrives.
    let mut more = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), up.read(&mut more))
            .await
            .is_err(),
        "the view-only viewer's key event reached the server"
    );
    let stats = server.next_relay().await.shutdown().await.unwrap();
    assert_eq!(stats.server_frames, 4);
    assert_eq!(stats.client_bytes, fbur.len() as u64);
    assert_eq!(stats.dropped_messages, 1);
    server.stop.cancel();
}

#[tokio::test]
async fn the_pipelined_handshake_refuses_a_server_that_wants_a_password() {
    let fake = fake_vnc().await;
    let mut server = start_relay_server(fake.target.clone(), RelayLimits::default(), None).await;
    let (mut ws, _) = ws_connect(server.addr, "/relay/control", Some(PIPELINED))
        .await
        .unwrap();
    let (mut up, _) = fake.listener.accept().await.unwrap();
    // VNC authentication only.
    up.write_all(b"RFB 003.008\n\x01\x02").await.unwrap();
    let mut version = [0u8; 12];
    up.read_exact(&mut version).await.unwrap();
    // Not one RFB byte reaches the viewer: only the Close frame.
    match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => {
            assert_eq!(f.code, CloseCode::Error);
            assert_eq!(f.reason, "vnc server unavailable");
        }
        other => panic!("expected a Close frame, got {other:?}"),
    }
    let error = server.next_relay().await.wait().await.unwrap_err();
    let chain = grexal_sidecar::api::error::error_chain(&error);
    assert!(
        chain.contains("offers no security type None (offers [2])"),
        "{chain}"
    );
    server.stop.cancel();
}

#[tokio::test]
async fn a_viewer_answering_the_greeting_with_another_version_is_closed() {
    let fake = fake_vnc().await;
    let server = start_relay_server(fake.target.clone(), RelayLimits::default(), None).await;
    let (mut ws, _) = ws_connect(server.addr, "/relay/control", Some(PIPELINED))
        .await
        .unwrap();
    let _up = fake.accept_handshake().await;
    for _ in 0..4 {
        next_binary(&mut ws).await;
    }
    ws.send(Message::Binary(b"RFB 003.007\n\x01\x01".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Policy);
    server.stop.cancel();
}

/// The client message types in `bytes` (after the 14 handshake bytes).
fn message_types(bytes: &[u8]) -> Vec<u8> {
    let mut p = RfbParser::new(RfbLimits::default());
    let mut at = 0;
    let mut types = Vec::new();
    while let Ok(Some((_, len))) = p.next_message(&bytes[at..]) {
        if at >= 14 {
            types.push(bytes[at]);
        }
        at += len;
    }
    assert_eq!(p.phase(), Phase::Normal);
    types
}

/// Sends handshake, key, pointer, cut text and a final FBUR; returns what the upstream got.
async fn upstream_receives(path: &str) -> Vec<u8> {
    let fake = fake_vnc().await;
    let mut server = start_relay_server(fake.target.clone(), RelayLimits::default(), None).await;
    let (mut ws, _) = ws_connect(server.addr, path, None).await.unwrap();
    let marker = encode::framebuffer_update_request(false, 64, 48);
    let inputs = [
        CLIENT_HANDSHAKE.to_vec(),
        encode::key_event(true, 0x61),
        [
            encode::pointer_event(1, 5, 5),
            encode::key_event(false, 0x61),
        ]
        .concat(),
        encode::client_cut_text(b"clipboard"),
        marker[..3].to_vec(),
        marker[3..].to_vec(),
    ];
    for chunk in inputs {
        ws.send(Message::Binary(chunk.into())).await.unwrap();
    }
    let mut up = fake.accept_handshake().await;
    let mut got = b"RFB 003.008\n\x01\x01".to_vec();
    let mut buf = [0u8; 4096];
    while !got.ends_with(&marker) {
        let n = tokio::time::timeout(DEADLINE, up.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "upstream closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let stats = server.next_relay().await.shutdown().await.unwrap();
    assert_eq!(stats.end, RelayEnd::Stopped);
    got
}

#[tokio::test]
async fn view_only_input_never_reaches_the_vnc_server() {
    let types = message_types(&upstream_receives("/relay/view").await);
    assert_eq!(types, vec![3]);
}

#[tokio::test]
async fn control_input_reaches_the_vnc_server() {
    let types = message_types(&upstream_receives("/relay/control").await);
    assert_eq!(types, vec![4, 5, 4, 6, 3]);
}

#[tokio::test]
async fn slow_viewer_bounds_buffering() {
    let fake = fake_vnc().await;
    let limits = RelayLimits::default();
    let read_size = limits.read_size;
    let mut server = start_relay_server(fake.target.clone(), limits, None).await;
    let (ws, _) = ws_connect(server.addr, "/relay/view", None).await.unwrap();
    let (mut up, _) = fake.listener.accept().await.unwrap();
    let handle = server.next_relay().await;
    // Flood until writes stop making progress; the viewer never reads.
    let chunk = vec![0x5a; 64 * 1024];
    let mut written = 0usize;
    let cap = 1usize << 30;
    loop {
        match tokio::time::timeout(Duration::from_millis(1500), up.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            Ok(Err(e)) => panic!("upstream write failed: {e}"),
            Err(_) => break,
        }
        assert!(
            written < cap,
            "relay absorbed {written} bytes: no backpressure"
        );
    }
    // What is left in flight is kernel socket buffers plus at most one read of ours.
    assert!(
        written < 64 << 20,
        "{written} bytes accepted before the upstream blocked"
    );
    let stats = handle.shutdown().await.unwrap();
    assert!(stats.peak_buffered <= read_size, "{stats:?}");
    assert!(stats.server_bytes <= written as u64);
    drop(ws);
    eprintln!(
        "upstream blocked after {written} bytes; relay forwarded {}",
        stats.server_bytes
    );
}

#[tokio::test]
async fn idle_viewer_is_dropped() {
    let limits = RelayLimits {
        idle_timeout: Duration::from_millis(300),
        ..RelayLimits::default()
    };
    let (_fake, mut server, mut ws, _up) = view_viewer_after_handshake_with(limits).await;
    let start = Instant::now();
    let code = loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break f.code,
            Some(Ok(_)) => {}
            other => panic!("expected a Close frame, got {other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Away);
    assert!(start.elapsed() >= Duration::from_millis(250));
    let stats = server.next_relay().await.wait().await.unwrap();
    assert_eq!(stats.end, RelayEnd::Idle);
}

/// An idle timeout past the clock's end (nothing bounds `RelayLimits` itself) means no idle
/// deadline: the relay forwards input and stops when told. Adding it to the clock panicked
/// the relay's task.
#[tokio::test]
async fn an_idle_timeout_past_the_clocks_end_never_fires() {
    let limits = RelayLimits {
        idle_timeout: Duration::MAX,
        ..RelayLimits::default()
    };
    let (_fake, mut server, mut ws, mut up) = control_viewer_after_handshake_with(limits).await;
    let key = encode::key_event(true, 0x61);
    ws.send(Message::Binary(key.clone().into())).await.unwrap();
    let got = read_upstream(&mut up, key.len()).await;
    assert_eq!(got, key);
    let stats = server.next_relay().await.shutdown().await.unwrap();
    assert_eq!(stats.end, RelayEnd::Stopped);
}

#[tokio::test]
async fn stop_cuts_both_directions() {
    // A viewer that keeps up: the frame in flight and the Close get a stop deadline of 1 s
    // here, not the default 10 ms, because on a loaded machine this test's reader (on the
    // same thread as the relay) may not run within 10 ms; cutting a viewer that does not keep
    // up is `a_stop_cuts_short_the_wait_for_a_closing_viewers_frame`'s.
    let limits = RelayLimits {
        stop_timeout: Duration::from_secs(1),
        ..RelayLimits::default()
    };
    let (_fake, mut server, mut ws, mut up) = control_viewer_after_handshake_with(limits).await;
    let handle = server.next_relay().await;
    // Streaming in both directions when the stop comes.
    let flood = tokio::spawn(async move {
        let chunk = vec![1u8; 64 * 1024];
        while up.write_all(&chunk).await.is_ok() {}
        up
    });
    let mut seen = 0usize;
    while seen < 1 << 20 {
        if let Some(Ok(Message::Binary(b))) = ws.next().await {
            seen += b.len();
        }
    }
    ws.send(Message::Binary(encode::key_event(true, 0x61).into()))
        .await
        .unwrap();
    // The viewer keeps reading: what was in flight, a Close frame, then the end.
    let (mut ws_tx, mut ws_rx) = ws.split();
    let reader = tokio::spawn(async move {
        let mut close = None;
        while let Ok(Some(msg)) = tokio::time::timeout(DEADLINE, ws_rx.next()).await {
            match msg {
                Ok(Message::Close(f)) => close = f.map(|f| f.code),
                Ok(Message::Binary(_)) => assert!(close.is_none(), "data after Close"),
                _ => break,
            }
        }
        close
    });
    let start = Instant::now();
    let stats = handle.shutdown().await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        start.elapsed()
    );
    assert_eq!(stats.end, RelayEnd::Stopped);
    // The upstream connection is gone: its writes fail, its reads see EOF.
    let mut up = tokio::time::timeout(DEADLINE, flood)
        .await
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, up.read_to_end(&mut rest))
        .await
        .unwrap();
    // Input sent after shutdown returned never arrives.
    let late = encode::key_event(true, 0x62);
    let _ = ws_tx.send(Message::Binary(late.clone().into())).await;
    assert!(!rest.windows(8).any(|w| w == late.as_slice()));
    assert_eq!(
        tokio::time::timeout(DEADLINE, reader)
            .await
            .unwrap()
            .unwrap(),
        Some(CloseCode::Normal)
    );
}

/// The send buffer of the viewer's socket as `ss` reports it (`tb` in `skmem`), for the
/// server side of the connection from `client_port`.
fn server_send_buffer(server_port: u16, client_port: u16) -> u64 {
    let out = std::process::Command::new("ss")
        .args(["-tmnH", "state", "established"])
        .arg(format!(
            "( sport = :{server_port} and dport = :{client_port} )"
        ))
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let tb = text
        .split(|c: char| c == ',' || c == '(' || c == ')' || c.is_whitespace())
        .find_map(|f| f.strip_prefix("tb"))
        .unwrap_or_else(|| panic!("no skmem in ss output: {text}"));
    tb.parse().unwrap()
}

#[tokio::test]
async fn viewer_send_buffer_is_bounded() {
    for (limit, want) in [(Some(100_000usize), Some(200_000u64)), (None, None)] {
        let fake = fake_vnc().await;
        let limits = RelayLimits {
            viewer_send_buffer: limit,
            ..RelayLimits::default()
        };
        let mut server = start_relay_server(fake.target.clone(), limits, None).await;
        let (ws, _) = ws_connect(server.addr, "/relay/control", None)
            .await
            .unwrap();
        let _up = fake.listener.accept().await.unwrap();
        let handle = server.next_relay().await;
        let client_port = ws.get_ref().local_addr().unwrap().port();
        let tb = server_send_buffer(server.addr.port(), client_port);
        match want {
            // Linux doubles SO_SNDBUF for its bookkeeping.
            Some(want) => assert_eq!(tb, want, "limit {limit:?}"),
            None => assert_ne!(tb, 200_000, "autotuned"),
        }
        drop(ws);
        let _ = handle.shutdown().await;
    }
}

/// A VNC server's Unix socket at `path` listening with a backlog of one, and the connections
/// (other viewers', not yet accepted) that fill that backlog: the next connect is refused
/// with EAGAIN, as Xvnc's small backlog is when several viewers open at once.
fn full_unix_backlog(
    path: &std::path::Path,
) -> (std::os::unix::net::UnixListener, Vec<std::os::fd::OwnedFd>) {
    use nix::sys::socket::{
        bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    use std::os::fd::AsRawFd;
    let addr = UnixAddr::new(path).unwrap();
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &addr).unwrap();
    listen(&fd, Backlog::new(1).unwrap()).unwrap();
    let mut queued = Vec::new();
    loop {
        let s = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        match connect(s.as_raw_fd(), &addr) {
            Ok(()) => queued.push(s),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(queued.len() < 16, "the backlog never filled");
    }
    (std::os::unix::net::UnixListener::from(fd), queued)
}

/// A Unix-socket VNC server whose backlog is full when the viewer comes, and which accepts
/// 200 ms later: the relay tries again until it is in (its connect timeout is 5 s) and the
/// viewer gets the server's banner. It was refused at once with 1011 "vnc server unavailable"
/// (5 of 16 viewers opening together, on the real daemon).
#[tokio::test]
async fn a_full_unix_backlog_is_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vnc.sock");
    let (listener, queued) = full_unix_backlog(&path);
    let mut server = start_relay_server(VncTarget::unix(&path), RelayLimits::default(), None).await;
    let (mut ws, _) = ws_connect(server.addr, "/relay/view", None).await.unwrap();
    let relay = server.next_relay().await;
    // The server catches up 200 ms later, then greets everyone.
    let catching_up = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut accepted = Vec::new();
        // The queued connections first, then the relay's.
        for _ in 0..=queued.len() {
            let (mut s, _) = listener.accept().unwrap();
            std::io::Write::write_all(&mut s, b"RFB 003.008\n").unwrap();
            accepted.push(s);
        }
        (accepted, queued)
    });
    let first = tokio::time::timeout(Duration::from_secs(3), ws.next()).await;
    assert!(
        matches!(&first, Ok(Some(Ok(Message::Binary(b)))) if b.as_ref() == b"RFB 003.008\n"),
        "the viewer got {first:?}, not the banner of a server that accepted 200 ms late"
    );
    let stats = relay.shutdown().await.unwrap();
    assert_eq!(stats.end, RelayEnd::Stopped);
    drop(catching_up.join().unwrap());
}

/// A backlog that stays full is given up on at the connect timeout: the viewer is closed
/// with 1011 and the relay fails with `ConnectTimeout`, not before.
#[tokio::test]
async fn a_backlog_full_past_the_connect_timeout_closes_the_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vnc.sock");
    let (_listener, _queued) = full_unix_backlog(&path);
    let limits = RelayLimits {
        connect_timeout: Duration::from_millis(300),
        ..RelayLimits::default()
    };
    let mut server = start_relay_server(VncTarget::unix(&path), limits, None).await;
    let start = Instant::now();
    let (mut ws, _) = ws_connect(server.addr, "/relay/view", None).await.unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Error);
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    let err = server.next_relay().await.wait().await;
    assert!(
        matches!(err, Err(grexal_sidecar::relay::RelayError::ConnectTimeout)),
        "{err:?}"
    );
}
