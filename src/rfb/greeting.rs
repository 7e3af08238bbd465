//! The server's half of the RFB handshake, done by the relay on a viewer's behalf.
//!
//! A viewer that negotiates with the VNC server itself waits three round trips of its own
//! link between the WebSocket opening and its first FramebufferUpdateRequest: its version
//! for the security types, its security type for the SecurityResult, its ClientInit for the
//! ServerInit (RFC 6143 §7.1–7.3). The relay sits next to the VNC server, so it plays the
//! client there instead — RFB 3.8, security type None, a shared session — and hands the
//! viewer the server's four messages at once. The viewer still answers each of them; the
//! relay checks those answers and drops them ([`RfbFilter::answered`](super::RfbFilter::answered)).
//! Only a viewer that asks for it is greeted this way (see `relay::PIPELINED_HANDSHAKE_PROTOCOL`);
//! any other sees the server's stream untouched.
//!
//! The desktop's VNC servers (Xvnc with `-SecurityTypes None`, x11vnc with `-nopw`) speak
//! 3.8 and offer None; a server that does not is refused with what it said, never worked
//! around.

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The version the relay answers and announces to the viewer.
pub const VERSION_3_8: &[u8; 12] = b"RFB 003.008\n";
/// The RFB security type None.
pub const SECURITY_NONE: u8 = 1;
/// Longest desktop name accepted in ServerInit (Xvnc's is `host:N (user)`).
pub const MAX_NAME_BYTES: u32 = 4096;
/// Longest refusal reason read from the server; a longer one is cut here.
pub const MAX_REASON_BYTES: u32 = 1024;

/// Why the server side of the handshake failed. Each ends the viewer's connection.
#[derive(Debug, Error)]
pub enum GreetingError {
    #[error("VNC server connection failed during the RFB handshake")]
    Io(#[from] std::io::Error),
    #[error("VNC server sent a malformed RFB ProtocolVersion")]
    BadVersion,
    #[error("VNC server speaks RFB {major}.{minor}; the relay's handshake needs 3.8 or later")]
    OldVersion { major: u16, minor: u16 },
    #[error("VNC server offers no security type None (offers {0:?})")]
    NoNoneSecurity(Vec<u8>),
    #[error("VNC server refused the connection: {0}")]
    Refused(String),
    #[error("VNC server's desktop name of {len} bytes exceeds the limit of {limit}")]
    NameTooLong { len: u32, limit: u32 },
}

/// What the viewer is sent, one WebSocket message each, in order: ProtocolVersion, the
/// security types (None only), SecurityResult (OK) and the server's ServerInit.
///
/// One message each and not one burst: noVNC 1.3 runs one step of its handshake per
/// WebSocket message, and stalls on bytes that arrived with an earlier step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub messages: [Vec<u8>; 4],
}

impl Greeting {
    /// The ServerInit as the server sent it (framebuffer size, pixel format, name).
    pub fn server_init(&self) -> &[u8] {
        &self.messages[3]
    }
}

/// Does the client's half of the handshake with the VNC server on `upstream` and returns
/// what the viewer must be sent. The caller bounds it in time.
pub async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    upstream: &mut S,
) -> Result<Greeting, GreetingError> {
    let mut version = [0u8; 12];
    upstream.read_exact(&mut version).await?;
    let (major, minor) = parse_server_version(&version)?;
    if (major, minor) < (3, 8) {
        return Err(GreetingError::OldVersion { major, minor });
    }
    upstream.write_all(VERSION_3_8).await?;

    let count = upstream.read_u8().await?;
    if count == 0 {
        return Err(GreetingError::Refused(read_reason(upstream).await?));
    }
    let mut types = vec![0u8; usize::from(count)];
    upstream.read_exact(&mut types).await?;
    if !types.contains(&SECURITY_NONE) {
        return Err(GreetingError::NoNoneSecurity(types));
    }
    upstream.write_all(&[SECURITY_NONE]).await?;

    if upstream.read_u32().await? != 0 {
        return Err(GreetingError::Refused(read_reason(upstream).await?));
    }
    // Shared: a viewer never makes the server drop the others (as `RfbFilter` forces).
    upstream.write_all(&[1]).await?;

    let mut server_init = vec![0u8; 24];
    upstream.read_exact(&mut server_init).await?;
    let name_len = u32::from_be_bytes([
        server_init[20],
        server_init[21],
        server_init[22],
        server_init[23],
    ]);
    if name_len > MAX_NAME_BYTES {
        return Err(GreetingError::NameTooLong {
            len: name_len,
            limit: MAX_NAME_BYTES,
        });
    }
    server_init.resize(24 + name_len as usize, 0);
    upstream.read_exact(&mut server_init[24..]).await?;

    Ok(Greeting {
        messages: [
            VERSION_3_8.to_vec(),
            vec![1, SECURITY_NONE],
            vec![0, 0, 0, 0],
            server_init,
        ],
    })
}

/// `RFB xxx.yyy\n`, three digits each.
fn parse_server_version(v: &[u8; 12]) -> Result<(u16, u16), GreetingError> {
    let digits = |r: &[u8]| -> Option<u16> {
        r.iter().try_fold(0u16, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u16::from(d - b'0'))
        })
    };
    if &v[..4] != b"RFB " || v[7] != b'.' || v[11] != b'\n' {
        return Err(GreetingError::BadVersion);
    }
    match (digits(&v[4..7]), digits(&v[8..11])) {
        (Some(major), Some(minor)) => Ok((major, minor)),
        _ => Err(GreetingError::BadVersion),
    }
}

/// A failure reason: a u32 length and that many bytes, of which at most
/// [`MAX_REASON_BYTES`] are read (the connection is dropped right after anyway). Control
/// characters are escaped so that the reason cannot forge log lines.
async fn read_reason<S: AsyncRead + Unpin>(upstream: &mut S) -> Result<String, GreetingError> {
    let len = upstream.read_u32().await?;
    let mut reason = vec![0u8; len.min(MAX_REASON_BYTES) as usize];
    upstream.read_exact(&mut reason).await?;
    Ok(String::from_utf8_lossy(&reason).escape_debug().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_init(name: &[u8]) -> Vec<u8> {
        let mut v = vec![0x05, 0x00, 0x03, 0x20]; // 1280 x 800
        v.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        v.extend_from_slice(&(name.len() as u32).to_be_bytes());
        v.extend_from_slice(name);
        v
    }

    /// Runs `greet` against a scripted server: `script` is what the server sends, all at
    /// once; returns the result and what the relay wrote.
    async fn against(script: Vec<u8>) -> (Result<Greeting, GreetingError>, Vec<u8>) {
        let (mut relay_end, mut server_end) = tokio::io::duplex(64 * 1024);
        server_end.write_all(&script).await.unwrap();
        // End of the server's stream: a short script ends in EOF, not a hang.
        server_end.shutdown().await.unwrap();
        let result = greet(&mut relay_end).await;
        drop(relay_end);
        let mut written = Vec::new();
        server_end.read_to_end(&mut written).await.unwrap();
        (result, written)
    }

    #[tokio::test]
    async fn a_none_server_is_greeted_and_its_server_init_kept() {
        let init = server_init(b"sandbox:1 (agent)");
        let script = [VERSION_3_8.as_slice(), &[2, 2, 1], &[0, 0, 0, 0], &init].concat();
        let (result, written) = against(script).await;
        let greeting = result.expect("greeting");
        assert_eq!(
            greeting.messages,
            [
                VERSION_3_8.to_vec(),
                vec![1, 1],
                vec![0, 0, 0, 0],
                init.clone()
            ]
        );
        assert_eq!(greeting.server_init(), init.as_slice());
        // Version 3.8, security type None, ClientInit shared.
        assert_eq!(written, [VERSION_3_8.as_slice(), &[1], &[1]].concat());
    }

    #[tokio::test]
    async fn a_later_version_is_answered_with_3_8() {
        let script = [
            b"RFB 005.000\n".as_slice(),
            &[1, 1],
            &[0, 0, 0, 0],
            &server_init(b""),
        ]
        .concat();
        let (result, written) = against(script).await;
        assert_eq!(result.expect("greeting").messages[0], VERSION_3_8.to_vec());
        assert_eq!(&written[..12], VERSION_3_8);
    }

    #[tokio::test]
    async fn refusals_are_specific() {
        let reason = |text: &str| {
            let mut v = (text.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(text.as_bytes());
            v
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"RFB 003.007\n".to_vec(), "speaks RFB 3.7"),
            (b"RFB 003.003\n".to_vec(), "speaks RFB 3.3"),
            (b"HTTP/1.1 400".to_vec(), "malformed"),
            (b"RFB 00a.008\n".to_vec(), "malformed"),
            (
                [VERSION_3_8.as_slice(), &[1, 2]].concat(),
                "no security type None (offers [2])",
            ),
            (
                [VERSION_3_8.as_slice(), &[0], &reason("too many\nclients")].concat(),
                "refused the connection: too many\\nclients",
            ),
            (
                [
                    VERSION_3_8.as_slice(),
                    &[1, 1],
                    &[0, 0, 0, 1],
                    &reason("no"),
                ]
                .concat(),
                "refused the connection: no",
            ),
            (
                [
                    VERSION_3_8.as_slice(),
                    &[1, 1],
                    &[0, 0, 0, 0],
                    &server_init(b"x")[..20],
                    &(MAX_NAME_BYTES + 1).to_be_bytes(),
                ]
                .concat(),
                "desktop name of 4097 bytes exceeds the limit of 4096",
            ),
            (VERSION_3_8[..5].to_vec(), "connection failed"),
        ];
        for (script, want) in cases {
            let (result, _) = against(script.clone()).await;
            let error = result.expect_err("refused").to_string();
            assert!(error.contains(want), "{script:?}: {error}");
        }
    }

    proptest::proptest! {
        /// Whatever a server sends, `greet` ends (the script ends in EOF) with a greeting
        /// whose ServerInit is exactly as long as it says, or an error; it never panics.
        #[test]
        fn any_server_bytes_end_in_a_greeting_or_an_error(
            prefix in 0usize..5,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let valid: [&[u8]; 5] = [b"", VERSION_3_8, &[1, 1], &[0, 0, 0, 0], &[0; 20]];
            let script = [valid[..prefix].concat(), tail].concat();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            if let (Ok(greeting), _) = runtime.block_on(against(script)) {
                let init = greeting.server_init();
                let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
                proptest::prop_assert!(name_len <= MAX_NAME_BYTES);
                proptest::prop_assert_eq!(init.len(), 24 + name_len as usize);
            }
        }
    }

    #[tokio::test]
    async fn a_long_reason_is_cut_at_the_limit() {
        let long = "r".repeat(MAX_REASON_BYTES as usize + 500);
        let mut script = [VERSION_3_8.as_slice(), &[0]].concat();
        script.extend_from_slice(&(long.len() as u32).to_be_bytes());
        script.extend_from_slice(long.as_bytes());
        let (result, _) = against(script).await;
        match result {
            Err(GreetingError::Refused(reason)) => {
                assert_eq!(reason.len(), MAX_REASON_BYTES as usize)
            }
            other => panic!("{other:?}"),
        }
    }
}
