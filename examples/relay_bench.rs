//! Relay benchmark: direct TCP vs our relay vs websockify, every process on CPU 0.
//!
//! `cargo run --release --example relay_bench -- --peer websockify [--upstream unix]`
//!
//! Three kinds of process, as in a sandbox: the upstream (a stand-in VNC server: a source
//! that writes 64 KiB chunks, and an echo), a relay (ours: this binary with `--serve-relay`,
//! or websockify), and the client (this process). The upstream is its own process, like Xvnc:
//! as a thread of the client, the direct read would skip the address-space switch that every
//! relayed byte pays, and flatter the floor. The relays reach the upstream over loopback TCP
//! (x11vnc's case) or, with `--upstream unix`, its Unix socket (Xvnc's, the daemon's default).
//! A third relay, `--serve-ceiling`, is the reference for throughput: a blocking read and a
//! `writev` per chunk and nothing else, what any relay that copies must at least pay.
//! Measured with a minimal blocking WebSocket client: throughput (median of N runs), 10-byte
//! round trips (a FramebufferUpdateRequest, so our RFB filter passes it), CPU per GiB and RSS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;
/// A FramebufferUpdateRequest: exactly 10 bytes, and valid RFB for our filter.
const PING: [u8; 10] = [3, 1, 0, 0, 0, 0, 0, 16, 0, 16];
const HANDSHAKE: &[u8] = b"RFB 003.008\n\x01\x01";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-upstream") {
        serve_upstream(Path::new(&args[2]));
        return;
    }
    if args.get(1).map(String::as_str) == Some("--serve-ceiling") {
        serve_ceiling(
            &args[2],
            args[3].parse().expect("read size"),
            args[4].parse().expect("send buffer"),
        );
        return;
    }
    if args.get(1).map(String::as_str) == Some("--serve-relay") {
        serve_relay(
            &args[2],
            &args[3],
            args[4].parse().expect("read size"),
            args[5].parse().expect("threads"),
            args[6].parse().expect("send buffer"),
        );
        return;
    }
    let mut peer = "/usr/bin/websockify".to_string();
    let mut runs = 7usize;
    let mut mib = 512usize;
    let mut rtts = 20_000usize;
    let defaults = grexal_sidecar::relay::RelayLimits::default();
    let mut read_size = defaults.read_size;
    // 0: the kernel's autotuning.
    let mut send_buffer = defaults.viewer_send_buffer.unwrap_or(0);
    let mut unix_upstream = false;
    // 0: a current-thread runtime; N: a multi-thread runtime with N workers (the daemon: 2).
    let mut relay_threads = 0usize;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().expect("missing value").clone();
        match a.as_str() {
            "--peer" => {
                let p = val();
                peer = if p == "websockify" {
                    "/usr/bin/websockify".into()
                } else {
                    p
                };
            }
            "--runs" => runs = val().parse().expect("--runs N"),
            "--mib" => mib = val().parse().expect("--mib N"),
            "--rtts" => rtts = val().parse().expect("--rtts N"),
            "--read-size" => read_size = val().parse().expect("--read-size BYTES"),
            "--relay-threads" => relay_threads = val().parse().expect("--relay-threads N"),
            "--send-buffer" => send_buffer = val().parse().expect("--send-buffer BYTES"),
            "--upstream" => {
                unix_upstream = match val().as_str() {
                    "tcp" => false,
                    "unix" => true,
                    other => panic!("--upstream tcp|unix, not {other}"),
                }
            }
            other => panic!("unknown argument {other}"),
        }
    }
    pin_to_cpu0();
    let exe = std::env::current_exe().expect("current_exe");
    let dir = std::env::temp_dir().join(format!("relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let (mut upstream_child, line) =
        spawn_printing(Command::new(&exe).arg("--serve-upstream").arg(&dir));
    let mut addrs = line
        .split_whitespace()
        .map(|a| a.parse::<SocketAddr>().expect("upstream addr"));
    let (source, echo) = (addrs.next().expect("source"), addrs.next().expect("echo"));
    let (source_sock, echo_sock) = (dir.join("source.sock"), dir.join("echo.sock"));
    let target = |tcp: SocketAddr, sock: &Path| match unix_upstream {
        true => format!("unix:{}", sock.display()),
        false => format!("tcp:{tcp}"),
    };

    let (mut relay_child, line) = spawn_printing(Command::new(&exe).args([
        "--serve-relay",
        &target(source, &source_sock),
        &target(echo, &echo_sock),
        &read_size.to_string(),
        &relay_threads.to_string(),
        &send_buffer.to_string(),
    ]));
    let relay_addr: SocketAddr = line.trim().parse().expect("relay printed its address");
    let relay = Peer {
        name: "grexal relay",
        source: (relay_addr, "/source".into()),
        echo: (relay_addr, "/echo".into()),
        pids: vec![relay_child.id()],
        children: vec![],
    };

    let (mut ceiling_child, line) = spawn_printing(Command::new(&exe).args([
        "--serve-ceiling",
        &target(source, &source_sock),
        &read_size.to_string(),
        &send_buffer.to_string(),
    ]));
    let ceiling_addr: SocketAddr = line.trim().parse().expect("ceiling printed its address");
    let ceiling = Peer {
        name: "minimal copying relay",
        source: (ceiling_addr, "/source".into()),
        echo: (ceiling_addr, "/unused".into()),
        pids: vec![ceiling_child.id()],
        children: vec![],
    };

    let ws_src_port = free_port();
    let ws_echo_port = free_port();
    let wsk_src = spawn_websockify(&peer, ws_src_port, &target(source, &source_sock));
    let wsk_echo = spawn_websockify(&peer, ws_echo_port, &target(echo, &echo_sock));
    let websockify = Peer {
        name: "websockify",
        source: (SocketAddr::from(([127, 0, 0, 1], ws_src_port)), "/".into()),
        echo: (SocketAddr::from(([127, 0, 0, 1], ws_echo_port)), "/".into()),
        pids: vec![wsk_src.id(), wsk_echo.id()],
        children: vec![wsk_src, wsk_echo],
    };
    wait_ws(&relay.source);
    wait_ws(&ceiling.source);
    wait_ws(&websockify.source);
    wait_ws(&websockify.echo);

    let bytes = (mib << 20) as u64;
    // Idle RSS before any connection.
    let idle = [rss_kib(&relay.pids), rss_kib(&websockify.pids)];

    let mut direct_tp = Vec::new();
    let mut direct_unix_tp = Vec::new();
    let mut tp = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpu = [0f64; 3];
    let mut rss_stream = [0u64; 3];
    for _ in 0..runs {
        direct_tp.push(throughput_direct(
            TcpStream::connect(source).unwrap(),
            bytes,
        ));
        if unix_upstream {
            direct_unix_tp.push(throughput_direct(
                UnixStream::connect(&source_sock).unwrap(),
                bytes,
            ));
        }
        for (i, p) in [&relay, &websockify, &ceiling].into_iter().enumerate() {
            let cpu0 = cpu_secs(&p.pids);
            let (mibs, peak) = throughput_ws(p, bytes);
            cpu[i] += cpu_secs(&p.pids) - cpu0;
            tp[i].push(mibs);
            rss_stream[i] = rss_stream[i].max(peak);
        }
    }
    let direct_rtt = rtt_direct(echo, rtts);
    let rtt = [rtt_ws(&relay, rtts), rtt_ws(&websockify, rtts)];

    let mut rss_viewers = [0u64; 2];
    for (i, p) in [&relay, &websockify].into_iter().enumerate() {
        let viewers: Vec<TcpStream> = (0..10).map(|_| idle_viewer(&p.echo)).collect();
        rss_viewers[i] = rss_kib(&p.pids);
        drop(viewers);
    }

    let gib = (bytes * runs as u64) as f64 / (1u64 << 30) as f64;
    let d_tp = median(&mut direct_tp);
    let mib_of = |k: u64| k as f64 / 1024.0;
    let runtime = match relay_threads {
        0 => "current-thread".to_string(),
        n => format!("multi-thread ({n} workers)"),
    };
    let upstream = if unix_upstream {
        "Unix socket"
    } else {
        "loopback TCP"
    };
    let send_buffer = match send_buffer {
        0 => "autotuned".to_string(),
        n => n.to_string(),
    };
    println!(
        "\n{mib} MiB per run, median of {runs} runs; {rtts} round trips of 10 bytes; relays reach the upstream over {upstream}; relay read size {read_size}, viewer send buffer {send_buffer}, runtime {runtime}; all on CPU 0\n"
    );
    println!("| | grexal relay | websockify | direct TCP |");
    println!("|---|---|---|---|");
    let r_tp = median(&mut tp[0]);
    let w_tp = median(&mut tp[1]);
    let c_tp = median(&mut tp[2]);
    println!(
        "| throughput MiB/s | {r_tp:.0} ({:.2}× direct, {:.2}× websockify) | {w_tp:.0} ({:.2}× direct) | {d_tp:.0} |",
        r_tp / d_tp,
        r_tp / w_tp,
        w_tp / d_tp
    );
    println!(
        "| minimal copying relay (blocking read + writev, no WebSocket input, no filter) MiB/s | {c_tp:.0}: {:.2}× direct, {:.2}× websockify; grexal relay = {:.2}× it; {:.3} CPU s per GiB | | |",
        c_tp / d_tp,
        c_tp / w_tp,
        r_tp / c_tp,
        cpu[2] / gib
    );
    if unix_upstream {
        let du = median(&mut direct_unix_tp);
        println!(
            "| direct read of the Unix socket MiB/s | {du:.0} (relay {:.2}×, websockify {:.2}×) | | |",
            r_tp / du,
            w_tp / du
        );
    }
    println!(
        "| RTT p50 / p99 µs | {:.1} / {:.1} (+{:.1} p50) | {:.1} / {:.1} (+{:.1} p50) | {:.1} / {:.1} |",
        rtt[0].0,
        rtt[0].1,
        rtt[0].0 - direct_rtt.0,
        rtt[1].0,
        rtt[1].1,
        rtt[1].0 - direct_rtt.0,
        direct_rtt.0,
        direct_rtt.1
    );
    println!(
        "| CPU s per GiB relayed | {:.3} | {:.3} | |",
        cpu[0] / gib,
        cpu[1] / gib
    );
    println!(
        "| RSS idle / streaming / +10 idle viewers MiB | {:.1} / {:.1} / {:.1} ({:.2} per viewer) | {:.1} / {:.1} / {:.1} ({:.2} per viewer) | |",
        mib_of(idle[0]),
        mib_of(rss_stream[0]),
        mib_of(rss_viewers[0]),
        mib_of(rss_viewers[0].saturating_sub(idle[0])) / 10.0,
        mib_of(idle[1]),
        mib_of(rss_stream[1]),
        mib_of(rss_viewers[1]),
        mib_of(rss_viewers[1].saturating_sub(idle[1])) / 10.0,
    );
    for c in [&mut relay_child, &mut ceiling_child, &mut upstream_child] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    for mut c in websockify.children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

struct Peer {
    name: &'static str,
    source: (SocketAddr, String),
    echo: (SocketAddr, String),
    pids: Vec<u32>,
    children: Vec<Child>,
}

fn pin_to_cpu0() {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pin to CPU 0"
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a child that prints one line (its addresses) and returns it with that line.
fn spawn_printing(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("child's first line");
    (child, line)
}

/// The upstream process: a source and an echo, each on loopback TCP and on a Unix socket in
/// `dir`. Prints `SOURCE_ADDR ECHO_ADDR`.
fn serve_upstream(dir: &Path) {
    let source = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    println!(
        "{} {}",
        source.local_addr().unwrap(),
        echo.local_addr().unwrap()
    );
    let source_unix = UnixListener::bind(dir.join("source.sock")).unwrap();
    let echo_unix = UnixListener::bind(dir.join("echo.sock")).unwrap();
    std::thread::spawn(move || accept_tcp(source, source_conn::<TcpStream>));
    std::thread::spawn(move || accept_tcp(echo, echo_conn::<TcpStream>));
    std::thread::spawn(move || accept_unix(source_unix, source_conn::<UnixStream>));
    accept_unix(echo_unix, echo_conn::<UnixStream>);
}

fn accept_tcp(l: TcpListener, handler: fn(TcpStream)) {
    for s in l.incoming().flatten() {
        let _ = s.set_nodelay(true);
        std::thread::spawn(move || handler(s));
    }
}

fn accept_unix(l: UnixListener, handler: fn(UnixStream)) {
    for s in l.incoming().flatten() {
        std::thread::spawn(move || handler(s));
    }
}

fn source_conn<S: Write>(mut s: S) {
    let chunk = vec![0xa5u8; CHUNK];
    while s.write_all(&chunk).is_ok() {}
}

fn echo_conn<S: Read + Write>(mut s: S) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// websockify in front of `target` (`tcp:ADDR` or `unix:PATH`).
fn spawn_websockify(path: &str, port: u16, target: &str) -> Child {
    let mut cmd = Command::new(path);
    cmd.arg(format!("127.0.0.1:{port}"));
    match target.split_once(':') {
        Some(("unix", sock)) => cmd.arg(format!("--unix-target={sock}")),
        Some(("tcp", addr)) => cmd.arg(addr),
        _ => panic!("bad target {target}"),
    };
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {path}: {e}"))
}

fn wait_ws(target: &(SocketAddr, String)) {
    let start = Instant::now();
    while ws_open(target).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{target:?} never accepted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking WebSocket client handshake (no subprotocol, like noVNC).
fn ws_open((addr, path): &(SocketAddr, String)) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other("no upgrade"));
    }
    Ok(s)
}

/// Sends one masked binary frame (mask key 0: the payload goes out as is).
fn ws_send(s: &mut TcpStream, payload: &[u8]) {
    assert!(payload.len() < 126);
    let mut f = vec![0x82, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    s.write_all(&f).expect("ws send");
}

/// Reads WebSocket frames, counting payload bytes, until `want` bytes arrived.
struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    left: u64,
}

impl FrameReader {
    fn new() -> Self {
        Self {
            buf: vec![0; 512 * 1024],
            start: 0,
            end: 0,
            left: 0,
        }
    }

    fn read_payload(&mut self, s: &mut TcpStream, want: u64, mut sink: impl FnMut(&[u8])) {
        let mut got = 0u64;
        while got < want {
            if self.start == self.end {
                self.start = 0;
                self.end = s.read(&mut self.buf).expect("read");
                assert!(self.end > 0, "peer closed");
            }
            if self.left == 0 {
                // Frame header; make sure it is whole.
                loop {
                    let avail = &self.buf[self.start..self.end];
                    let need = match avail.get(1).map(|b| b & 0x7f) {
                        None => 2,
                        Some(126) => 4,
                        Some(127) => 10,
                        Some(_) => 2,
                    };
                    if avail.len() >= need {
                        break;
                    }
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                    let n = s.read(&mut self.buf[self.end..]).expect("read");
                    assert!(n > 0, "peer closed");
                    self.end += n;
                }
                let h = &self.buf[self.start..self.end];
                assert_eq!(
                    h[0] & 0x0f,
                    2,
                    "expected a binary frame, got opcode {}",
                    h[0] & 0x0f
                );
                let (len, hl) = match h[1] & 0x7f {
                    126 => (u16::from_be_bytes([h[2], h[3]]) as u64, 4),
                    127 => (u64::from_be_bytes(h[2..10].try_into().unwrap()), 10),
                    n => (n as u64, 2),
                };
                self.start += hl;
                self.left = len;
                continue;
            }
            let take = ((self.end - self.start) as u64).min(self.left) as usize;
            sink(&self.buf[self.start..self.start + take]);
            self.start += take;
            self.left -= take as u64;
            got += take as u64;
        }
    }
}

fn throughput_direct(mut s: impl Read, bytes: u64) -> f64 {
    let mut buf = vec![0u8; 512 * 1024];
    let mut got = 0u64;
    let start = Instant::now();
    while got < bytes {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got += n as u64;
    }
    got as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
}

/// Returns MiB/s and the peak RSS (KiB) of the peer's processes during the run.
fn throughput_ws(p: &Peer, bytes: u64) -> (f64, u64) {
    let mut s = ws_open(&p.source).expect("ws open");
    let pids = p.pids.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while !d.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(rss_kib(&pids));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let mut r = FrameReader::new();
    let start = Instant::now();
    r.read_payload(&mut s, bytes, |_| {});
    let mibs = bytes as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = p.name;
    (mibs, sampler.join().unwrap())
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn rtt_direct(addr: SocketAddr, n: usize) -> (f64, f64) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut back = [0u8; 10];
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 1000 {
        let t = Instant::now();
        s.write_all(&PING).unwrap();
        s.read_exact(&mut back).unwrap();
        if i >= 1000 {
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    percentiles(v)
}

fn rtt_ws(p: &Peer, n: usize) -> (f64, f64) {
    let mut s = ws_open(&p.echo).expect("ws open");
    let mut r = FrameReader::new();
    ws_send(&mut s, HANDSHAKE);
    r.read_payload(&mut s, HANDSHAKE.len() as u64, |_| {});
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 1000 {
        let t = Instant::now();
        ws_send(&mut s, &PING);
        r.read_payload(&mut s, PING.len() as u64, |_| {});
        if i >= 1000 {
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    percentiles(v)
}

/// An open viewer that did the RFB handshake and then stays silent.
fn idle_viewer(target: &(SocketAddr, String)) -> TcpStream {
    let mut s = ws_open(target).expect("ws open");
    ws_send(&mut s, HANDSHAKE);
    FrameReader::new().read_payload(&mut s, HANDSHAKE.len() as u64, |_| {});
    s
}

/// The pids plus all their descendants (websockify forks one process per connection).
fn tree(pids: &[u32]) -> Vec<u32> {
    let mut all = pids.to_vec();
    let mut i = 0;
    while i < all.len() {
        let pid = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                all.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
        i += 1;
    }
    all
}

fn rss_kib(pids: &[u32]) -> u64 {
    tree(pids)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

/// utime + stime of the processes and their (live) descendants, in seconds. Children that
/// exited are counted through cutime/cstime of their parent.
fn cpu_secs(pids: &[u32]) -> f64 {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    tree(pids)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|s| {
            let after = &s[s.rfind(')').map_or(0, |i| i + 2)..];
            let f: Vec<&str> = after.split_whitespace().collect();
            // Fields 14-17 of stat (1-based) are utime, stime, cutime, cstime.
            (11..15)
                .map(|i| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0))
                .sum::<f64>()
        })
        .sum::<f64>()
        / tick
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `tcp:ADDR` or `unix:PATH`.
fn parse_target(t: &str) -> grexal_sidecar::relay::VncTarget {
    use grexal_sidecar::relay::VncTarget;
    match t.split_once(':') {
        Some(("unix", p)) => VncTarget::unix(PathBuf::from(p)),
        Some(("tcp", a)) => VncTarget::tcp(a.parse().expect("addr")).expect("loopback"),
        _ => panic!("bad target {t}"),
    }
}

/// The ceiling for any relay that reads: a blocking process that answers the upgrade without
/// checking it, then only reads the upstream into one buffer and writes each read as one
/// binary frame (header and payload in one `writev`), with the same read size and viewer
/// send buffer as ours. No viewer input, no RFB filter, no runtime: what is left is the
/// kernel's work for a receive and a send, which no copying relay avoids.
fn serve_ceiling(source: &str, read_size: usize, send_buffer: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    for viewer in listener.incoming().flatten() {
        let source = source.to_string();
        std::thread::spawn(move || {
            let _ = ceiling_conn(viewer, &source, read_size, send_buffer);
        });
    }
}

fn ceiling_conn(
    mut viewer: TcpStream,
    source: &str,
    read_size: usize,
    send_buffer: usize,
) -> std::io::Result<()> {
    use std::io::IoSlice;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if viewer.read(&mut b)? == 0 {
            return Ok(());
        }
        head.push(b[0]);
    }
    // The accept value of the client's fixed key (RFC 6455's own example).
    viewer.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )?;
    viewer.set_nodelay(true)?;
    if send_buffer > 0 {
        nix::sys::socket::setsockopt(&viewer, nix::sys::socket::sockopt::SndBuf, &send_buffer)
            .expect("SO_SNDBUF");
    }
    let mut upstream: Box<dyn Read> = match source.split_once(':') {
        Some(("unix", p)) => Box::new(UnixStream::connect(p)?),
        Some(("tcp", a)) => Box::new(TcpStream::connect(a)?),
        _ => panic!("bad target {source}"),
    };
    let mut buf = vec![0u8; read_size];
    loop {
        let n = upstream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut header = [0x82, 127, 0, 0, 0, 0, 0, 0, 0, 0];
        header[2..].copy_from_slice(&(n as u64).to_be_bytes());
        let (mut h, mut p) = (&header[..], &buf[..n]);
        while !h.is_empty() || !p.is_empty() {
            let mut w = viewer.write_vectored(&[IoSlice::new(h), IoSlice::new(p)])?;
            let from_h = w.min(h.len());
            h = &h[from_h..];
            w -= from_h;
            p = &p[w..];
        }
    }
}

/// The relay process: one route per upstream, no token, default limits but for the read
/// size and the viewer send buffer (0: autotuned). Upgrades exactly as the daemon's route.
fn serve_relay(source: &str, echo: &str, read_size: usize, threads: usize, send_buffer: usize) {
    use axum::routing::any;
    use grexal_sidecar::relay::{accept_viewer, relay, Access, RelayLimits, VncTarget};
    let rt = match threads {
        0 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    }
    .enable_all()
    .build()
    .expect("runtime");
    let limits = RelayLimits {
        read_size,
        viewer_send_buffer: (send_buffer > 0).then_some(send_buffer),
        ..RelayLimits::default()
    };
    rt.block_on(async move {
        let route = |target: VncTarget| {
            let limits = limits.clone();
            any(move |mut req: axum::extract::Request| {
                let (target, limits) = (target.clone(), limits.clone());
                async move {
                    let (response, pending) = accept_viewer(&mut req).expect("upgrade request");
                    tokio::spawn(async move {
                        let Ok(socket) = pending.socket(limits.viewer_send_buffer).await else {
                            return;
                        };
                        let stop = tokio_util::sync::CancellationToken::new();
                        let _ = relay(socket, &target, Access::Control, &limits, stop).await;
                    });
                    response
                }
            })
        };
        let app = axum::Router::new()
            .route("/source", route(parse_target(source)))
            .route("/echo", route(parse_target(echo)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        // Each connection served as the daemon's control endpoint serves it.
        let stop = tokio_util::sync::CancellationToken::new();
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            let conn = grexal_sidecar::api::serve_connection(
                tcp,
                app.clone(),
                (),
                grexal_sidecar::api::ConnLimits::default(),
                stop.clone(),
            );
            tokio::spawn(conn);
        }
    });
}
