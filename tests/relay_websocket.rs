//! The relay's WebSocket framing, end to end as in `relay.rs` (a real HTTP/1.1 server, a
//! fake VNC server): text and unknown messages, subprotocols, pings, fragments, masks,
//! control frames and Close frames, oversized frames and clipboards; viewers that stop
//! reading and then ping or close, and a VNC server that stops reading, all dropped in time.

#[path = "support/relay.rs"]
mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use grexal_sidecar::relay::{RelayEnd, RelayError, RelayLimits, VncTarget};
use grexal_sidecar::rfb::encode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn text_frame_closes_with_policy_error() {
    let (_fake, mut server, mut ws, _up) = control_viewer().await;
    ws.send(Message::Text("RFB 003.008\n".into()))
        .await
        .unwrap();
    let code = loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break f.code,
            Some(Ok(_)) => {}
            other => panic!("expected a Close frame, got {other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Policy);
    let err = server.next_relay().await.wait().await.unwrap_err();
    assert!(matches!(err, RelayError::TextFrame), "{err:?}");
}

#[tokio::test]
async fn unknown_message_closes_with_policy_error() {
    let fake = fake_vnc().await;
    let mut server = start_relay_server(fake.target.clone(), RelayLimits::default(), None).await;
    let (mut ws, _) = ws_connect(server.addr, "/relay/view", None).await.unwrap();
    let (mut up, _) = fake.listener.accept().await.unwrap();
    ws.send(Message::Binary(
        [CLIENT_HANDSHAKE, &[9u8, 0, 0, 0]].concat().into(),
    ))
    .await
    .unwrap();
    // Nothing of a message batch with an unknown type reaches the VNC server.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, up.read_to_end(&mut got))
        .await
        .unwrap();
    assert!(got.is_empty(), "{got:?}");
    // The viewer is told why: 1008, as docs/api.md says.
    assert_eq!(close_code(&mut ws).await, CloseCode::Policy);
    let err = server.next_relay().await.wait().await.unwrap_err();
    assert!(
        matches!(
            err,
            RelayError::Rfb(grexal_sidecar::rfb::RfbError::UnknownMessage(9))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn handshake_subprotocols() {
    let fake = fake_vnc().await;
    let server = start_relay_server(
        fake.target.clone(),
        RelayLimits::default(),
        Some("dG9rZW4".into()),
    )
    .await;
    // The token travels as a subprotocol; only `binary` is echoed.
    let (_ws, resp) = ws_connect(
        server.addr,
        "/relay/view",
        Some("binary, grexal.v1.dG9rZW4"),
    )
    .await
    .unwrap();
    assert_eq!(
        resp.headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .count(),
        1
    );
    assert_eq!(resp.headers()["sec-websocket-protocol"], "binary");
    // A wrong token is refused before the upgrade.
    let refused = ws_connect(
        server.addr,
        "/relay/view",
        Some("binary, grexal.v1.d3Jvbmc"),
    )
    .await;
    assert!(refused.is_err());

    // No subprotocol at all (noVNC's default) is accepted and none is echoed.
    let open = start_relay_server(fake.target.clone(), RelayLimits::default(), None).await;
    let (_ws, resp) = ws_connect(open.addr, "/relay/view", None).await.unwrap();
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
}

#[tokio::test]
async fn non_loopback_target_is_refused() {
    let addr = "192.0.2.1:5900".parse().unwrap();
    assert!(matches!(
        VncTarget::tcp(addr),
        Err(RelayError::NotLoopback(_))
    ));
}

/// Sends one raw frame (tungstenite masks it, as a client must).
async fn send_frame(ws: &mut Ws, opcode: OpCode, fin: bool, payload: &[u8]) {
    let frame = Frame::message(payload.to_vec(), opcode, fin);
    ws.send(Message::Frame(frame)).await.unwrap();
}

#[tokio::test]
async fn ping_is_answered_and_fragmented_input_is_reassembled() {
    let (_fake, mut server, mut ws, mut up) = control_viewer_after_handshake().await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    // The server's handshake bytes may come first.
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) => break assert_eq!(&p[..], b"are you there"),
            Some(Ok(Message::Binary(_))) => {}
            other => panic!("expected a Pong, got {other:?}"),
        }
    }
    // One key event in three frames: a binary start and two continuations.
    let key = encode::key_event(true, 0x61);
    send_frame(&mut ws, OpCode::Data(Data::Binary), false, &key[..3]).await;
    send_frame(&mut ws, OpCode::Data(Data::Continue), false, &key[3..5]).await;
    send_frame(&mut ws, OpCode::Data(Data::Continue), true, &key[5..]).await;
    let got = read_upstream(&mut up, key.len()).await;
    assert_eq!(got, key);
    // The viewer's Close is echoed, and the relay ends as closed by the viewer.
    ws.send(Message::Close(None)).await.unwrap();
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Binary(_))) => {}
            other => panic!("expected the Close echo, got {other:?}"),
        }
    }
    let stats = server.next_relay().await.wait().await.unwrap();
    assert_eq!(stats.end, RelayEnd::ViewerClosed);
    assert_eq!(
        stats.client_bytes,
        (CLIENT_HANDSHAKE.len() + key.len()) as u64
    );
}

#[tokio::test]
async fn continuation_without_a_start_closes_with_protocol_error() {
    let (_fake, mut server, mut ws, _up) = control_viewer().await;
    send_frame(
        &mut ws,
        OpCode::Data(Data::Continue),
        true,
        b"RFB 003.008\n",
    )
    .await;
    assert_eq!(close_code(&mut ws).await, CloseCode::Protocol);
    let err = server.next_relay().await.wait().await;
    assert!(matches!(err, Err(RelayError::BadContinuation)), "{err:?}");
}

#[tokio::test]
async fn unmasked_frame_closes_with_protocol_error() {
    let (_fake, mut server, mut ws, mut up) = control_viewer_after_handshake().await;
    // A FramebufferUpdateRequest the filter would pass, but sent without a masking key,
    // straight onto the socket under the (always masking) client.
    let request = encode::framebuffer_update_request(false, 16, 16);
    let mut raw = vec![0x82, request.len() as u8];
    raw.extend_from_slice(&request);
    ws.get_mut().write_all(&raw).await.unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Protocol);
    let err = server.next_relay().await.wait().await;
    assert!(matches!(err, Err(RelayError::UnmaskedFrame)), "{err:?}");
    // Not one byte of it reached the VNC server: its end of the socket sees EOF.
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, up.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "{} bytes leaked upstream", rest.len());
}

/// A client frame as raw bytes with a masking key (tungstenite refuses to build a control
/// frame over 125 bytes, so these are written by hand).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11u8, 0x22, 0x33, 0x44];
    let mut v = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => v.push(0x80 | n as u8),
        n => {
            v.push(0x80 | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    v.extend_from_slice(&key);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    v
}

/// Expects the very next frame from the relay to be a Close with `code` (no Pong first),
/// the relay to end with an error that `is_expected`, and no byte after the handshake to
/// have reached the VNC server.
async fn closed_before_anything_flows(
    ws: &mut Ws,
    server: &mut RelayServer,
    up: &mut tokio::net::TcpStream,
    code: CloseCode,
    is_expected: impl Fn(&RelayError) -> bool,
) {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break assert_eq!(f.code, code),
            // The server's handshake.
            Some(Ok(Message::Binary(_))) => {}
            other => panic!("expected Close {code}, got {other:?}"),
        }
    }
    let err = server.next_relay().await.wait().await;
    assert!(matches!(&err, Err(e) if is_expected(e)), "{err:?}");
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, up.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(
        rest.is_empty(),
        "{} bytes reached the VNC server",
        rest.len()
    );
}

#[tokio::test]
async fn unmasked_ping_closes_with_protocol_error_instead_of_a_pong() {
    let (_fake, mut server, mut ws, mut up) = control_viewer_after_handshake().await;
    let mut raw = vec![0x89, 4];
    raw.extend_from_slice(b"ping");
    // A masked key event right behind it must not reach the server either.
    raw.extend_from_slice(&masked_frame(0x2, &encode::key_event(true, 0x61)));
    ws.get_mut().write_all(&raw).await.unwrap();
    closed_before_anything_flows(&mut ws, &mut server, &mut up, CloseCode::Protocol, |e| {
        matches!(e, RelayError::UnmaskedFrame)
    })
    .await;
}

#[tokio::test]
async fn control_frames_over_125_bytes_close_with_protocol_error() {
    // A Close of 200 bytes is not echoed (that would be an invalid frame of ours), and a
    // Pong of 60,000 bytes is not swallowed.
    let mut long_close = 1000u16.to_be_bytes().to_vec();
    long_close.extend_from_slice(&[b'r'; 198]);
    for (opcode, payload) in [(0x8u8, long_close), (0xA, vec![0u8; 60_000])] {
        let (_fake, mut server, mut ws, mut up) = control_viewer_after_handshake().await;
        let mut raw = masked_frame(opcode, &payload);
        raw.extend_from_slice(&masked_frame(0x2, &encode::key_event(true, 0x61)));
        ws.get_mut().write_all(&raw).await.unwrap();
        closed_before_anything_flows(&mut ws, &mut server, &mut up, CloseCode::Protocol, |e| {
            matches!(e, RelayError::BadControlFrame(_))
        })
        .await;
    }
}

#[tokio::test]
async fn a_malformed_close_is_refused_and_a_good_one_echoes_its_code() {
    // A one-byte body, and 1005 (which no endpoint may send): 1002, not an echo.
    for payload in [vec![3u8], 1005u16.to_be_bytes().to_vec()] {
        let (_fake, mut server, mut ws, mut up) = control_viewer_after_handshake().await;
        ws.get_mut()
            .write_all(&masked_frame(0x8, &payload))
            .await
            .unwrap();
        closed_before_anything_flows(&mut ws, &mut server, &mut up, CloseCode::Protocol, |e| {
            matches!(e, RelayError::BadControlFrame(_))
        })
        .await;
    }
    let (_fake, mut server, mut ws, _up) = control_viewer_after_handshake().await;
    let mut close = 4001u16.to_be_bytes().to_vec();
    close.extend_from_slice("bye é".as_bytes());
    ws.get_mut()
        .write_all(&masked_frame(0x8, &close))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break assert_eq!(u16::from(f.code), 4001),
            Some(Ok(Message::Binary(_))) => {}
            other => panic!("expected the Close echo, got {other:?}"),
        }
    }
    let stats = server.next_relay().await.wait().await.unwrap();
    assert_eq!(stats.end, RelayEnd::ViewerClosed);
}

#[tokio::test]
async fn a_clipboard_larger_than_a_frame_streams_through_or_is_dropped_whole() {
    // 1 MiB of clipboard in the 10 KiB frames noVNC sends, then a key event and an update
    // request: a controlling viewer's server gets all of it, a view-only viewer's only the
    // update request.
    let text: Vec<u8> = (0..1u32 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let cut = encode::client_cut_text(&text);
    let key = encode::key_event(true, 0x61);
    let request = encode::framebuffer_update_request(true, 16, 16);
    let stream = [cut.clone(), key.clone(), request.clone()].concat();
    for view_only in [false, true] {
        let fake = fake_vnc().await;
        let mut server =
            start_relay_server(fake.target.clone(), RelayLimits::default(), None).await;
        let path = if view_only {
            "/relay/view"
        } else {
            "/relay/control"
        };
        let (mut ws, _) = ws_connect(server.addr, path, None).await.unwrap();
        ws.send(Message::Binary(CLIENT_HANDSHAKE.to_vec().into()))
            .await
            .unwrap();
        let mut up = fake.accept_handshake().await;
        for chunk in stream.chunks(10 * 1024) {
            ws.send(Message::Binary(chunk.to_vec().into()))
                .await
                .unwrap();
        }
        let want = if view_only {
            request.clone()
        } else {
            stream.clone()
        };
        let got = read_upstream(&mut up, want.len()).await;
        assert!(
            got == want,
            "view_only={view_only}: the server got other bytes"
        );
        ws.close(None).await.unwrap();
        let stats = server.next_relay().await.wait().await.unwrap();
        assert_eq!(
            stats.client_messages, 6,
            "handshake (3), clipboard, key, request"
        );
        assert_eq!(stats.dropped_messages, if view_only { 2 } else { 0 });
    }
}

#[tokio::test]
async fn oversized_frame_closes_with_message_too_big() {
    let fake = fake_vnc().await;
    let limits = RelayLimits {
        max_client_message: 1024,
        ..RelayLimits::default()
    };
    let mut server = start_relay_server(fake.target.clone(), limits, None).await;
    let (mut ws, _) = ws_connect(server.addr, "/relay/control", None)
        .await
        .unwrap();
    let (mut up, _) = fake.listener.accept().await.unwrap();
    // At the limit: passes (a ClientCutText of 1024 - 8 bytes, after the handshake).
    ws.send(Message::Binary(CLIENT_HANDSHAKE.to_vec().into()))
        .await
        .unwrap();
    let cut = encode::client_cut_text(&vec![b'x'; 1024 - 8]);
    assert_eq!(cut.len(), 1024);
    ws.send(Message::Binary(cut.clone().into())).await.unwrap();
    read_upstream(&mut up, CLIENT_HANDSHAKE.len() + cut.len()).await;
    // One byte over: refused, and not one of its bytes reaches the server.
    ws.send(Message::Binary(vec![0u8; 1025].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Size);
    let err = server.next_relay().await.wait().await;
    assert!(
        matches!(err, Err(RelayError::FrameTooLarge { limit: 1024 })),
        "{err:?}"
    );
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, up.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{} bytes leaked", rest.len());
}

/// A raw viewer on the view-only route: a small receive buffer, and it reads only the 101.
/// It has sent the client's half of the RFB handshake; the fake VNC server's end is returned.
async fn raw_viewer_after_handshake(
    fake: &FakeVnc,
    server: &RelayServer,
) -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut viewer = socket.connect(server.addr).await.unwrap();
    let request = "GET /relay/view HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
    viewer.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(viewer.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    viewer
        .write_all(&masked_frame(0x2, CLIENT_HANDSHAKE))
        .await
        .unwrap();
    let up = fake.accept_handshake().await;
    (viewer, up)
}

/// Floods `up` (a framebuffer update the viewer asked for) until the end; resolves once a
/// write has made no progress for 200 ms: the viewer's socket is full, and the relay is
/// stuck writing a frame to it.
async fn flood_until_blocked(mut up: tokio::net::TcpStream) {
    let (blocked, is_blocked) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let chunk = vec![0u8; 64 * 1024];
        let mut blocked = Some(blocked);
        loop {
            let write = up.write_all(&chunk);
            tokio::pin!(write);
            let done = match tokio::time::timeout(Duration::from_millis(200), &mut write).await {
                Ok(done) => done,
                Err(_) => {
                    if let Some(b) = blocked.take() {
                        let _ = b.send(());
                    }
                    write.await
                }
            };
            if done.is_err() {
                return;
            }
        }
    });
    tokio::time::timeout(DEADLINE, is_blocked)
        .await
        .expect("the viewer's socket never filled")
        .unwrap();
}

/// A viewer that stops reading while the server streams, then sends a Ping: the pong must
/// not wait for the writer, which is stuck on the frame the viewer does not read. It did,
/// holding the relay (its VNC connection, a view-only slot) past the idle timeout, until the
/// takeover ended.
#[tokio::test]
async fn a_viewer_that_pings_once_and_never_reads_is_dropped_when_idle() {
    let fake = fake_vnc().await;
    let limits = RelayLimits {
        idle_timeout: Duration::from_secs(1),
        ..RelayLimits::default()
    };
    let mut server = start_relay_server(fake.target.clone(), limits, None).await;
    let (mut viewer, up) = raw_viewer_after_handshake(&fake, &server).await;
    let relay = server.next_relay().await;
    flood_until_blocked(up).await;
    viewer.write_all(&masked_frame(0x9, b"hi")).await.unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(5), relay.wait())
        .await
        .expect("still relaying 5 s after the ping, with an idle timeout of 1 s")
        .unwrap();
    assert_eq!(stats.end, RelayEnd::Idle);
    // Dropped mid-frame: no Close frame could follow.
    assert!(stats.cut_mid_frame, "{stats:?}");
}

/// The same viewer sends a Close instead: its relay ends (the frame it does not read is
/// given the close timeout, 1 s, then the connection is closed) long before the idle timeout.
/// The echo used to wait for the writer for good.
#[tokio::test]
async fn a_viewer_that_closes_and_never_reads_is_let_go() {
    let fake = fake_vnc().await;
    let limits = RelayLimits {
        idle_timeout: Duration::from_secs(60),
        ..RelayLimits::default()
    };
    let close_timeout = limits.close_timeout;
    let mut server = start_relay_server(fake.target.clone(), limits, None).await;
    let (mut viewer, up) = raw_viewer_after_handshake(&fake, &server).await;
    let relay = server.next_relay().await;
    flood_until_blocked(up).await;
    let closed = std::time::Instant::now();
    viewer
        .write_all(&masked_frame(0x8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(5), relay.wait())
        .await
        .expect("still relaying 5 s after the viewer's Close")
        .unwrap();
    assert_eq!(stats.end, RelayEnd::ViewerClosed);
    assert!(stats.cut_mid_frame, "{stats:?}");
    assert!(closed.elapsed() >= close_timeout, "{:?}", closed.elapsed());
}

/// A stop while the relay gives a closing viewer's frame the close timeout (10 s here) cuts
/// that short to the stop timeout: whatever the relay is finishing, a takeover's ending does
/// not wait on it.
#[tokio::test]
async fn a_stop_cuts_short_the_wait_for_a_closing_viewers_frame() {
    let fake = fake_vnc().await;
    let limits = RelayLimits {
        close_timeout: Duration::from_secs(10),
        ..RelayLimits::default()
    };
    let mut server = start_relay_server(fake.target.clone(), limits, None).await;
    let (mut viewer, up) = raw_viewer_after_handshake(&fake, &server).await;
    let relay = server.next_relay().await;
    flood_until_blocked(up).await;
    viewer
        .write_all(&masked_frame(0x8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    // Time for the relay to read the Close and start waiting on the frame.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = std::time::Instant::now();
    let stats = relay.shutdown().await.unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(1),
        "the stop took {:?}",
        stopped.elapsed()
    );
    assert_eq!(stats.end, RelayEnd::ViewerClosed);
    assert!(stats.cut_mid_frame, "{stats:?}");
}

/// A viewer that never reads and sends nothing more is dropped when idle (as before: the
/// reference for the two above).
#[tokio::test]
async fn a_silent_viewer_that_never_reads_is_dropped_when_idle() {
    let fake = fake_vnc().await;
    let limits = RelayLimits {
        idle_timeout: Duration::from_secs(1),
        ..RelayLimits::default()
    };
    let mut server = start_relay_server(fake.target.clone(), limits, None).await;
    let (_viewer, up) = raw_viewer_after_handshake(&fake, &server).await;
    let relay = server.next_relay().await;
    flood_until_blocked(up).await;
    let stats = tokio::time::timeout(Duration::from_secs(5), relay.wait())
        .await
        .expect("not dropped")
        .unwrap();
    assert_eq!(stats.end, RelayEnd::Idle);
}

/// A VNC server that stops reading: the viewer's input fills its socket, the relay's write
/// to it blocks, and the viewer, still sending, is no longer read. That is no input: the
/// viewer is dropped at the idle timeout. The idle deadline covered only the read from the
/// viewer, so the relay stayed blocked for good.
#[tokio::test]
async fn a_vnc_server_that_does_not_read_leaves_the_viewer_idle() {
    let limits = RelayLimits {
        idle_timeout: Duration::from_secs(1),
        ..RelayLimits::default()
    };
    // The VNC server's end, `_up`, is never read from.
    let (_fake, mut server, ws, _up) = view_viewer_after_handshake_with(limits).await;
    let relay = server.next_relay().await;
    // FramebufferUpdateRequests (forwarded for a watcher too), 60 KiB a message.
    let requests = encode::framebuffer_update_request(true, 64, 48).repeat(6 * 1024);
    let (mut ws_tx, mut ws_rx) = ws.split();
    let flood = tokio::spawn(async move {
        while ws_tx
            .send(Message::Binary(requests.clone().into()))
            .await
            .is_ok()
        {}
    });
    let stats = tokio::time::timeout(Duration::from_secs(20), relay.wait())
        .await
        .expect("still relaying 20 s on, with an idle timeout of 1 s")
        .unwrap();
    assert_eq!(stats.end, RelayEnd::Idle);
    assert!(stats.client_bytes > 0, "{stats:?}");
    flood.abort();
    // The viewer is told why.
    loop {
        match tokio::time::timeout(DEADLINE, ws_rx.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break assert_eq!(f.code, CloseCode::Away),
            Some(Ok(_)) => {}
            other => panic!("expected a Close frame, got {other:?}"),
        }
    }
}

/// A viewer of a still screen (no byte either way) is pinged every `keepalive_interval`,
/// so a proxy in front of it does not close the connection as idle; the pings (and the
/// viewer's pongs) are not input, so a viewer that sends nothing else is still dropped
/// after the idle timeout.
#[tokio::test]
async fn a_still_screen_is_kept_alive_with_pings_that_are_not_input() {
    let limits = RelayLimits {
        keepalive_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(2),
        ..RelayLimits::default()
    };
    let (_fake, mut server, mut ws, _up) = control_viewer_after_handshake_with(limits).await;
    let relay = server.next_relay().await;
    let started = std::time::Instant::now();
    let mut pings = 0;
    // tungstenite answers each Ping with a Pong as it reads.
    while started.elapsed() < Duration::from_millis(1500) {
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Ping(payload))) => {
                assert!(payload.is_empty(), "{payload:?}");
                pings += 1;
            }
            Some(Ok(Message::Binary(_))) => {}
            other => panic!("expected pings, got {other:?}"),
        }
    }
    assert!(pings >= 4, "{pings} pings in 1.5 s at one per 200 ms");
    let stats = tokio::time::timeout(Duration::from_secs(5), async {
        // Keep reading (and answering) until the relay closes.
        while let Some(Ok(_)) = ws.next().await {}
        relay.wait().await
    })
    .await
    .expect("relaying past the idle timeout")
    .unwrap();
    assert_eq!(stats.end, RelayEnd::Idle);
    assert!(started.elapsed() >= Duration::from_secs(2));
}
