//! Readiness probes that speak each child's protocol: an X11 connection setup, an RFB
//! banner, a CDP `/json/version`. "The socket file exists" is never taken as ready.
//!
//! Every reply is untrusted bytes from another process and is read under a size limit.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::xauth::XAuthority;
use super::{DesktopError, RunAs};

/// Largest X11 setup reply we read (vendor string, formats, screens, visuals).
const MAX_X11_SETUP: usize = 256 * 1024;
/// Largest `/json/version` response we read.
const MAX_HTTP_RESPONSE: usize = 64 * 1024;
/// Largest `DevToolsActivePort` file we read.
pub(crate) const MAX_DEVTOOLS_FILE: u64 = 4096;

/// The root window size of screen 0, from a successful X11 setup reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct X11Screen {
    pub(crate) width: u16,
    pub(crate) height: u16,
}

/// Why an X11 setup reply was not a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum X11Setup {
    Ok(X11Screen),
    /// Refused (0) or wants authentication (2), with the server's reason.
    Refused(String),
    Malformed(&'static str),
}

/// Parses a complete setup reply (8-byte header plus `4 * length` bytes). Only what we
/// need: status, and the first screen's size.
pub(crate) fn parse_x11_setup(reply: &[u8]) -> X11Setup {
    let Some(header) = reply.get(..8) else {
        return X11Setup::Malformed("short header");
    };
    let status = header[0];
    if status != 1 {
        // Failed/Authenticate: byte 1 is the reason length (Failed); the reason follows.
        let len = usize::from(header[1]);
        let reason = reply
            .get(8..8 + len)
            .or_else(|| reply.get(8..))
            .unwrap_or_default();
        // The server's own words, logged: escaped, so a line break in them (whoever
        // listens on the display's socket chooses them) cannot start a line of our log.
        let reason = String::from_utf8_lossy(reason).escape_debug().to_string();
        return X11Setup::Refused(reason);
    }
    let body = &reply[8..];
    let u16_at = |off: usize| {
        body.get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    // Setup success body: vendor length at 16, screens count at 20, formats count at 21,
    // then 32 bytes of fixed fields, the padded vendor, 8 bytes per format, the screens.
    let (Some(vendor_len), Some(&screens), Some(&formats)) =
        (u16_at(16), body.get(20), body.get(21))
    else {
        return X11Setup::Malformed("short setup body");
    };
    if screens == 0 {
        return X11Setup::Malformed("no screens");
    }
    let vendor_padded = (usize::from(vendor_len) + 3) & !3;
    let screen = 32 + vendor_padded + 8 * usize::from(formats);
    // Screen: root(4) colormap(4) white(4) black(4) input-masks(4) width(2) height(2).
    match (u16_at(screen + 20), u16_at(screen + 22)) {
        (Some(width), Some(height)) => X11Setup::Ok(X11Screen { width, height }),
        _ => X11Setup::Malformed("short screen"),
    }
}

/// Connects to the display's Unix socket and completes a connection setup, presenting the
/// display's cookie (a display started with `-auth` refuses a client without it).
pub(crate) async fn x11(display: u32, auth: &XAuthority) -> Result<X11Screen, DesktopError> {
    let path = format!("/tmp/.X11-unix/X{display}");
    let io = |source| DesktopError::Probe {
        child: "display",
        source,
    };
    let mut stream = UnixStream::connect(&path).await.map_err(io)?;
    stream.write_all(&auth.setup_request()).await.map_err(io)?;
    let mut reply = vec![0u8; 8];
    stream.read_exact(&mut reply).await.map_err(io)?;
    let extra = 4 * usize::from(u16::from_le_bytes([reply[6], reply[7]]));
    if extra > MAX_X11_SETUP {
        return Err(DesktopError::ProbeRejected {
            child: "display",
            reason: "setup reply too large".into(),
        });
    }
    reply.resize(8 + extra, 0);
    stream.read_exact(&mut reply[8..]).await.map_err(io)?;
    match parse_x11_setup(&reply) {
        X11Setup::Ok(screen) => Ok(screen),
        X11Setup::Refused(reason) => Err(DesktopError::ProbeRejected {
            child: "display",
            reason,
        }),
        X11Setup::Malformed(what) => Err(DesktopError::ProbeRejected {
            child: "display",
            reason: what.into(),
        }),
    }
}

/// Whether `banner` is an RFB ProtocolVersion message, `RFB xxx.yyy\n`.
pub(crate) fn is_rfb_banner(banner: &[u8]) -> bool {
    banner.len() == 12
        && banner.starts_with(b"RFB ")
        && banner[11] == b'\n'
        && banner[7] == b'.'
        && banner[4..7]
            .iter()
            .chain(&banner[8..11])
            .all(u8::is_ascii_digit)
}

/// Longest security-failure reason read from a VNC server that refuses the probe.
const MAX_RFB_REASON: u32 = 1024;

/// What the probe answers to an RFB 3.7+ server, and to an older one.
const RFB_38: &[u8; 12] = b"RFB 003.008\n";
const RFB_33: &[u8; 12] = b"RFB 003.003\n";

/// Goes through the RFB handshake up to the server's security offer, then hangs up. The
/// banner alone proves little: a libvncserver that will not serve a client on its Unix
/// socket (x11vnc with `-localhost`, or one built before libvncserver tolerated a failing
/// `TCP_NODELAY`) sends the banner and closes the connection at once.
async fn rfb_handshake(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
) -> Result<(), DesktopError> {
    let io = |source| DesktopError::Probe {
        child: "vnc",
        source,
    };
    let rejected = |reason: String| DesktopError::ProbeRejected {
        child: "vnc",
        reason,
    };
    let mut banner = [0u8; 12];
    stream.read_exact(&mut banner).await.map_err(io)?;
    if !is_rfb_banner(&banner) {
        return Err(rejected("not an RFB banner".into()));
    }
    // 3.3 servers name one security type as a u32; 3.7 and 3.8 send a list.
    let v3_3 = &banner[4..11] < b"003.007".as_slice();
    stream
        .write_all(if v3_3 { RFB_33 } else { RFB_38 })
        .await
        .map_err(io)?;
    let offered = if v3_3 {
        stream.read_u32().await.map_err(io)?
    } else {
        let count = stream.read_u8().await.map_err(io)?;
        let mut types = vec![0u8; usize::from(count)];
        stream.read_exact(&mut types).await.map_err(io)?;
        u32::from(count)
    };
    if offered != 0 {
        return Ok(());
    }
    // A refusal carries its reason.
    let len = stream.read_u32().await.map_err(io)?;
    let mut reason = vec![0u8; len.min(MAX_RFB_REASON) as usize];
    stream.read_exact(&mut reason).await.map_err(io)?;
    Err(rejected(format!(
        "the VNC server refused the connection: {}",
        String::from_utf8_lossy(&reason).escape_debug()
    )))
}

/// Checks that the VNC server speaks RFB and serves a client up to its security offer.
/// On a Unix socket, returns the pid of the process that listens on it (`SO_PEERCRED` of
/// this very connection: the kernel records who called `listen`), so the caller can tell
/// the server's own socket from one another process bound at the path first.
pub(crate) async fn rfb(target: &crate::relay::VncTarget) -> Result<Option<i32>, DesktopError> {
    let io = |source| DesktopError::Probe {
        child: "vnc",
        source,
    };
    match target {
        crate::relay::VncTarget::Tcp(addr) => {
            rfb_handshake(TcpStream::connect(addr).await.map_err(io)?).await?;
            Ok(None)
        }
        crate::relay::VncTarget::Unix(path) => {
            let stream = UnixStream::connect(path).await.map_err(io)?;
            let listener = stream.peer_cred().map_err(io)?.pid();
            rfb_handshake(stream).await?;
            Ok(listener)
        }
    }
}

fn vnc_rejected(reason: String) -> DesktopError {
    DesktopError::ProbeRejected {
        child: "vnc",
        reason,
    }
}

/// The inodes of the sockets the process `pid` holds, from `/proc/PID/fd`. A descriptor
/// that cannot be read fails the whole list: skipped, it would hide the very listener
/// looked for (the directory lists for anyone with CAP_DAC_OVERRIDE, but each link reads
/// only for the process's user or with CAP_SYS_PTRACE; the procfs crate skips what it
/// cannot read, hence this by hand). One closed meanwhile is skipped.
fn socket_inodes(pid: i32) -> Result<std::collections::HashSet<u64>, DesktopError> {
    let dir = format!("/proc/{pid}/fd");
    let unreadable = |e: std::io::Error| vnc_rejected(format!("{dir}: {e}"));
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir(&dir).map_err(unreadable)? {
        match std::fs::read_link(entry.map_err(unreadable)?.path()) {
            Ok(target) => inodes.extend(socket_inode(&target)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unreadable(e)),
        }
    }
    Ok(inodes)
}

/// The inode of a `/proc/PID/fd` link to a socket, `socket:[INODE]`.
fn socket_inode(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The TCP listening sockets of the process `pid`, from `/proc/PID/fd` (its socket inodes)
/// and `/proc/PID/net/tcp{,6}` (its network namespace's listeners). `user`: the process's
/// user, as whom `/proc/PID/fd` is read (see `as_user`: root would need CAP_SYS_PTRACE).
pub(crate) fn tcp_listeners(
    pid: u32,
    user: Option<RunAs>,
) -> Result<Vec<std::net::SocketAddr>, DesktopError> {
    let pid = i32::try_from(pid).map_err(|_| vnc_rejected(format!("pid {pid} out of range")))?;
    let process = procfs::process::Process::new(pid)
        .map_err(|e| vnc_rejected(format!("/proc/{pid}: {e}")))?;
    let sockets = super::as_user::run_as(user, || socket_inodes(pid))
        .map_err(|e| vnc_rejected(format!("acting as the desktop's user: {e}")))??;
    let mut table = process
        .tcp()
        .map_err(|e| vnc_rejected(format!("/proc/{pid}/net/tcp: {e}")))?;
    // No tcp6 table when the kernel has IPv6 off; then there are no IPv6 listeners either.
    table.extend(process.tcp6().unwrap_or_default());
    Ok(table
        .into_iter()
        .filter(|e| e.state == procfs::net::TcpState::Listen && sockets.contains(&e.inode))
        .map(|e| e.local_address)
        .collect())
}

/// Parses `DevToolsActivePort`: the port on the first line, the browser target's path
/// on the second. `None` while Chromium is still writing it.
pub(crate) fn parse_devtools_active_port(text: &str) -> Option<(u16, String)> {
    let mut lines = text.lines();
    let port: u16 = lines.next()?.trim().parse().ok()?;
    let path = lines.next()?.trim();
    if port == 0 || !path.starts_with('/') {
        return None;
    }
    Some((port, path.to_owned()))
}

/// Reads `DevToolsActivePort` if complete.
pub(crate) async fn devtools_active_port(profile: &Path) -> Option<(u16, String)> {
    let file = tokio::fs::File::open(profile.join("DevToolsActivePort"))
        .await
        .ok()?;
    let mut text = String::new();
    file.take(MAX_DEVTOOLS_FILE)
        .read_to_string(&mut text)
        .await
        .ok()?;
    parse_devtools_active_port(&text)
}

#[derive(Deserialize)]
struct JsonVersion {
    #[serde(rename = "webSocketDebuggerUrl")]
    ws_url: String,
}

/// Splits a complete HTTP/1.x response into status code and body; `None` until the
/// head and `Content-Length` bytes of body are all there (or if it is not HTTP).
pub(crate) fn parse_http_response(response: &[u8]) -> Option<(u16, &[u8])> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?.parse().ok()?;
    let length: usize = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, value)| value.trim().parse().ok())?;
    let body = response.get(end + 4..)?.get(..length)?;
    Some((code, body))
}

/// `GET /json/version` on loopback; returns the browser's WebSocket URL. Hand-written:
/// one request, one response read up to its `Content-Length` (Chromium's DevTools server
/// answers HTTP/1.0 with nothing and keeps HTTP/1.1 connections open whatever
/// `Connection` says), and the crate set has no HTTP client.
pub(crate) async fn cdp_version(port: u16) -> Result<String, DesktopError> {
    let io = |source| DesktopError::Probe {
        child: "chromium",
        source,
    };
    let rejected = |reason: &str| DesktopError::ProbeRejected {
        child: "chromium",
        reason: reason.into(),
    };
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(io)?;
    let request = format!(
        "GET /json/version HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    let body = loop {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(rejected("connection closed before a complete response"));
        }
        response.extend_from_slice(&chunk[..n]);
        if response.len() > MAX_HTTP_RESPONSE {
            return Err(rejected("/json/version response too large"));
        }
        if let Some((code, body)) = parse_http_response(&response) {
            if code != 200 {
                return Err(rejected("/json/version did not answer 200"));
            }
            break body;
        }
    };
    let version: JsonVersion = serde_json::from_slice(body)
        .map_err(|_| rejected("/json/version is not the expected JSON"))?;
    if !version.ws_url.starts_with("ws://127.0.0.1:") {
        return Err(rejected("CDP WebSocket is not on loopback"));
    }
    Ok(version.ws_url)
}

/// Retries `probe` every `interval` until it succeeds or `timeout` passes; the last
/// error is returned inside `ProbeTimeout`'s message source.
pub(crate) async fn poll<T, F, Fut>(
    child: &'static str,
    timeout: Duration,
    interval: Duration,
    mut probe: F,
) -> Result<T, DesktopError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DesktopError>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = tokio::time::timeout_at(deadline, probe()).await;
        match attempt {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => {
                tracing::trace!(child, %error, "probe not yet ready");
                if tokio::time::Instant::now() + interval >= deadline {
                    return Err(DesktopError::ProbeTimeout {
                        child,
                        timeout,
                        last: Some(Box::new(error)),
                    });
                }
                tokio::time::sleep(interval).await;
            }
            Err(_) => {
                return Err(DesktopError::ProbeTimeout {
                    child,
                    timeout,
                    last: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A real process that listens on `addr` port 0 and prints the port.
    fn listener_process(addr: &str) -> (std::process::Child, u16) {
        listener_process_as(addr, None)
    }

    /// `listener_process`, as `user` if given.
    fn listener_process_as(addr: &str, user: Option<RunAs>) -> (std::process::Child, u16) {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let script = "import socket,sys,time\n\
                      s=socket.socket(); s.bind((sys.argv[1], 0)); s.listen()\n\
                      print(s.getsockname()[1], flush=True); time.sleep(60)";
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-c", script, addr])
            .stdout(std::process::Stdio::piped());
        if let Some(user) = user {
            // std drops root's supplementary groups when it switches uid.
            cmd.uid(user.uid).gid(user.gid);
        }
        let mut child = cmd.spawn().expect("spawn listener");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port line");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("port: {line:?}"));
        (child, port)
    }

    fn stop(mut child: std::process::Child) {
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    #[test]
    fn tcp_listeners_are_the_process_own_only() {
        let (listener, port) = listener_process("127.0.0.1");
        let bystander = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep");
        let own = tcp_listeners(listener.id(), None);
        let other = tcp_listeners(bystander.id(), None);
        stop(listener);
        stop(bystander);
        assert_eq!(
            own.expect("own"),
            vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))]
        );
        assert_eq!(other.expect("other"), vec![]);
    }

    /// Under the unit's (or Docker's) capabilities, root may list another user's
    /// `/proc/PID/fd` but not read a single entry: its listeners are read as that user,
    /// and an unreadable table is an error, never an empty list.
    #[test]
    fn another_users_listeners_are_read_as_that_user_without_ptrace() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI is set but not root");
            eprintln!("skipping: running a process as another user needs root");
            return;
        }
        let nobody = RunAs {
            uid: 65534,
            gid: 65534,
        };
        let (listener, port) = listener_process_as("127.0.0.1", Some(nobody));
        let pid = listener.id();
        let (as_owner, as_root) = crate::desktop::as_user::testing::without_ptrace_or_admin(|| {
            (tcp_listeners(pid, Some(nobody)), tcp_listeners(pid, None))
        });
        stop(listener);
        assert_eq!(
            as_owner.expect("read as its user"),
            vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))]
        );
        assert!(
            matches!(&as_root, Err(DesktopError::ProbeRejected { reason, .. }) if reason.starts_with(&format!("/proc/{pid}/fd"))),
            "{as_root:?}"
        );
    }

    /// Runs the RFB probe against a server that writes `script` (and reads whatever the
    /// probe sends), then closes.
    async fn probe_against(script: Vec<u8>) -> Result<Option<i32>, DesktopError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vnc.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let (mut rx, mut tx) = conn.split();
            let drain = async {
                let mut sink = [0u8; 64];
                while rx.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            };
            let write = async {
                tx.write_all(&script).await.ok();
                tx.shutdown().await.ok();
            };
            tokio::join!(drain, write);
        });
        let result = rfb(&crate::relay::VncTarget::Unix(path)).await;
        server.abort();
        result
    }

    #[tokio::test]
    async fn rfb_probe_needs_the_security_offer_not_only_the_banner() {
        let banner = b"RFB 003.008\n".to_vec();
        // A server that serves clients: banner, then one security type (None). The probe
        // names the process that listens on the socket: this one.
        assert_eq!(
            probe_against([banner.clone(), vec![1, 1]].concat())
                .await
                .expect("served"),
            Some(std::process::id() as i32)
        );
        // An RFB 3.3 server names its one security type as a u32.
        assert!(
            probe_against([b"RFB 003.003\n".to_vec(), vec![0, 0, 0, 1]].concat())
                .await
                .is_ok()
        );
        // The banner, then a hang-up: what x11vnc does to a client it will not serve.
        let hung_up = probe_against(banner.clone()).await;
        assert!(
            matches!(&hung_up, Err(DesktopError::Probe { child: "vnc", .. })),
            "{hung_up:?}"
        );
        // A refusal, with the server's reason.
        let refused =
            probe_against([banner, vec![0, 0, 0, 0, 7], b"go away".to_vec()].concat()).await;
        assert!(
            matches!(&refused, Err(DesktopError::ProbeRejected { reason, .. })
                if reason == "the VNC server refused the connection: go away"),
            "{refused:?}"
        );
        // Not RFB at all.
        let http = probe_against(b"HTTP/1.1 200".to_vec()).await;
        assert!(
            matches!(&http, Err(DesktopError::ProbeRejected { reason, .. }) if reason == "not an RFB banner"),
            "{http:?}"
        );
    }

    fn setup_success(vendor: &[u8], formats: u8, width: u16, height: u16) -> Vec<u8> {
        let mut body = vec![0u8; 32];
        body[16..18].copy_from_slice(&(vendor.len() as u16).to_le_bytes());
        body[20] = 1;
        body[21] = formats;
        body.extend_from_slice(vendor);
        while body.len() % 4 != 0 {
            body.push(0);
        }
        body.extend(std::iter::repeat_n(0, 8 * usize::from(formats)));
        let mut screen = vec![0u8; 40];
        screen[20..22].copy_from_slice(&width.to_le_bytes());
        screen[22..24].copy_from_slice(&height.to_le_bytes());
        body.extend(screen);
        let mut reply = vec![1, 0, 11, 0, 0, 0];
        reply.extend_from_slice(&((body.len() / 4) as u16).to_le_bytes());
        reply.extend(body);
        reply
    }

    #[test]
    fn x11_setup_replies() {
        let cases: Vec<(Vec<u8>, X11Setup)> = vec![
            (
                setup_success(b"The X.Org Foundation", 7, 1280, 800),
                X11Setup::Ok(X11Screen {
                    width: 1280,
                    height: 800,
                }),
            ),
            (
                setup_success(b"abc", 0, 640, 480),
                X11Setup::Ok(X11Screen {
                    width: 640,
                    height: 480,
                }),
            ),
            (
                [vec![0, 4, 11, 0, 0, 0, 1, 0], b"nope".to_vec()].concat(),
                X11Setup::Refused("nope".into()),
            ),
            (
                [vec![0, 8, 11, 0, 0, 0, 2, 0], b"no\nFORGE".to_vec()].concat(),
                X11Setup::Refused("no\\nFORGE".into()),
            ),
            (vec![1, 0, 11], X11Setup::Malformed("short header")),
            (
                vec![1, 0, 11, 0, 0, 0, 0, 0],
                X11Setup::Malformed("short setup body"),
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(parse_x11_setup(&reply), want, "reply {reply:?}");
        }
    }

    #[test]
    fn rfb_banners() {
        let cases: [(&[u8], bool); 6] = [
            (b"RFB 003.008\n", true),
            (b"RFB 003.003\n", true),
            (b"RFB 003.008", false),
            (b"RFB 003,008\n", false),
            (b"HTTP/1.1 200", false),
            (b"RFB 00x.008\n", false),
        ];
        for (banner, ok) in cases {
            assert_eq!(is_rfb_banner(banner), ok, "{banner:?}");
        }
    }

    #[test]
    fn devtools_active_port_files() {
        let cases = [
            (
                "9222\n/devtools/browser/abc\n",
                Some((9222, "/devtools/browser/abc".to_owned())),
            ),
            ("9222\n", None),
            ("", None),
            ("0\n/devtools/browser/abc", None),
            ("70000\n/devtools/browser/abc", None),
            ("x\n/devtools", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_devtools_active_port(text), want, "{text:?}");
        }
    }

    #[test]
    fn http_responses() {
        type Case<'a> = (&'a [u8], Option<(u16, &'a [u8])>);
        let cases: [Case; 7] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length:2\r\nContent-Type: x\r\n\r\n{}",
                Some((200, b"{}")),
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}extra",
                Some((200, b"{}")),
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}", None),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}", None),
            (b"HTTP/1.0 500 Err\r\n\r\n", Some((500, b""))),
            (b"HTTP/1.1 200 OK\r\n", None),
            (b"SSH-2.0\r\n\r\n", None),
        ];
        for (response, want) in cases {
            assert_eq!(parse_http_response(response), want);
        }
    }

    proptest! {
        #[test]
        fn x11_parser_never_panics(reply in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_x11_setup(&reply);
        }

        #[test]
        fn http_parser_never_panics(response in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_http_response(&response);
        }

        #[test]
        fn devtools_parser_never_panics(text in ".{0,64}") {
            let _ = parse_devtools_active_port(&text);
        }
    }
}
