//! Helpers for tests that run the real binary: a cleared environment, a temp directory
//! others may traverse (the agent runs as another user), readiness by polling, and the
//! daemon's log printed on failure.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_grexal-sidecar");
/// `nobody`, the unprivileged agent user in tests.
pub const NOBODY: u32 = 65534;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A temp dir with mode 0755 so an agent running as `nobody` can reach the socket and scripts.
pub fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("grexal-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

pub fn write(path: &Path, contents: impl AsRef<[u8]>, mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, contents).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The binary with a cleared environment (only PATH), so no test depends on the caller's env.
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

pub fn run_to_end(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .expect("spawn grexal-sidecar")
}

/// Keys and a bundle made with the binary's own `keygen` and `seal`.
pub struct SealedFixture {
    pub sandbox_key: PathBuf,
    pub sandbox_pub: PathBuf,
    pub platform_key: PathBuf,
    pub platform_pub: PathBuf,
}

impl SealedFixture {
    pub fn new(dir: &Path) -> Self {
        let keys = dir.join("keys");
        for kind in ["sandbox", "platform"] {
            let out = run_to_end(
                command()
                    .args(["keygen", "--kind", kind, "--out-dir"])
                    .arg(&keys),
            );
            assert!(
                out.status.success(),
                "keygen {kind}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        SealedFixture {
            sandbox_key: keys.join("sandbox.key"),
            sandbox_pub: keys.join("sandbox.pub"),
            platform_key: keys.join("platform.key"),
            platform_pub: keys.join("platform.pub"),
        }
    }

    pub fn seal(&self, credentials: &Path, sandbox_id: &str, version: u64, out: &Path) {
        let o = run_to_end(
            command()
                .args(["seal", "--credentials"])
                .arg(credentials)
                .args([
                    "--sandbox-id",
                    sandbox_id,
                    "--version",
                    &version.to_string(),
                    "--sandbox-pub",
                ])
                .arg(&self.sandbox_pub)
                .arg("--platform-key")
                .arg(&self.platform_key)
                .arg("--out")
                .arg(out),
        );
        assert!(
            o.status.success(),
            "seal: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// A running daemon whose stderr goes to a log file; stopped by PID on drop (SIGTERM, so it
/// stops its desktop and wipes its files, then SIGKILL if it is still there after 15 s).
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    pub socket: PathBuf,
}

impl Daemon {
    pub fn spawn(mut cmd: Command, log: PathBuf, socket: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("spawn daemon");
        Daemon { child, log, socket }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls until the socket answers `GET /healthz`, or panics with the log.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(resp) = http_unix(&self.socket, "GET", "/healthz", None) {
                if resp.status == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "daemon exited early with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "daemon not ready after {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the control endpoint at `addr` accepts a connection. Boot binds it after the
    /// agent socket that `wait_ready` checks, so a test that goes on to the control endpoint
    /// right after `wait_ready` could otherwise be refused.
    pub fn wait_listening(&mut self, addr: std::net::SocketAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "daemon exited early with {status}; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "control endpoint {addr} not listening after {timeout:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for exit (with a deadline), returning the exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status
                    .code()
                    .unwrap_or_else(|| panic!("killed by signal; log:\n{}", self.log_text()));
            }
            if Instant::now() > deadline {
                panic!(
                    "daemon still running after {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("kill");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // A SIGKILL alone would leave the desktop's children (each in a process group
            // of its own) running on, x11vnc's shared memory with them.
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One HTTP/1.1 request on a Unix socket, `Connection: close`.
pub fn http_unix(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
) -> std::io::Result<HttpResponse> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad())?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok(HttpResponse { status, body })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
    out
}

/// Asserts that none of `canaries` appears in `text` (logs, errors, output).
pub fn assert_no_canary(what: &str, text: &str, canaries: &[&str]) {
    for canary in canaries {
        assert!(
            !text.contains(canary),
            "{what} leaks a secret value ({canary}):\n{text}"
        );
    }
}

/// Where browser tests keep their screenshots: `e2e-artifacts` in the target directory this
/// test binary was built in (`target/debug/deps/NAME` → `target/`), so a `CARGO_TARGET_DIR`
/// elsewhere is honoured and the source tree gets nothing.
pub fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("a test binary lives in TARGET/PROFILE/deps");
    let dir = target.join("e2e-artifacts");
    std::fs::create_dir_all(&dir).expect("mkdir artifacts");
    dir
}

/// One HTTP/1.1 request over TCP with an optional bearer token, `Connection: close`.
pub fn http_tcp(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    bearer: Option<&str>,
    body: Option<&[u8]>,
) -> std::io::Result<HttpResponse> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or_default();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// A free loopback port (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// True when the test must be skipped: a binary is missing and CI is unset.
pub fn skip_missing(test: &str, binaries: &[&str]) -> bool {
    let missing: Vec<_> = binaries.iter().filter(|b| !Path::new(b).exists()).collect();
    if missing.is_empty() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: CI is set but {missing:?} are missing"
    );
    eprintln!("skipping {test}: {missing:?} not installed");
    true
}

/// Skips (returns true) when not root outside CI; fails under CI, where tests run as root.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root and CI is set"
    );
    eprintln!("skipping {test}: needs root");
    true
}

/// What `tests/e2e/viewer.mjs` reported: its last JSON line on stdout, and its stderr.
pub fn harness_result(stdout: &[u8], stderr: &[u8]) -> (serde_json::Value, String) {
    let stdout = String::from_utf8_lossy(stdout);
    let stderr = String::from_utf8_lossy(stderr).into_owned();
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}");
    let result = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("harness printed no JSON ({e}): {stdout}\n{stderr}"));
    (result, stderr)
}

pub fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// Once a reader has the FIFO at `path` open (the daemon, blocked at boot), opens it for
/// writing without ever writing, so the reader stays blocked in its read. Returns the
/// writing end, to keep open while the test runs.
pub fn fifo_with_a_silent_writer(path: &Path, reader: &mut Daemon) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // ENXIO until a reader has the FIFO open.
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(file) => return file,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => panic!("open {}: {e}", path.display()),
        }
        if let Ok(Some(status)) = reader.child.try_wait() {
            panic!("daemon exited with {status}; log:\n{}", reader.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never opened {}; log:\n{}",
            path.display(),
            reader.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pids of the processes whose command line has `needle` as an argument.
pub fn pids_with_arg(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .split(|&b| b == 0)
                .any(|arg| arg == needle.as_bytes())
        })
        .collect()
}
