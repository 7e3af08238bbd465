//! Benchmark of `ctx.connect` over the agent socket: keep-alive clients, each sending
//! sequential `GET /v1/connections/{id}` requests on a raw HTTP/1.1 connection, with 1 and
//! 32 concurrent clients; next to it, the floor: reading the same body from a tmpfs file
//! (open + read + close per request).
//!
//! ```text
//! cargo run --release --example connect_bench                      # in-process API
//! cargo run --release --example connect_bench -- /run/grexal/sidecar.sock openai
//! taskset -c 0 cargo run --release --example connect_bench        # pinned, for latency
//! ```
//! Options after the socket and id: `--requests N` per scenario (default 40000).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grexal_sidecar::api::{self, ApiLimits, ApiState};
use grexal_sidecar::platform::events::EventBus;
use grexal_sidecar::store::testing::{inert_injector, manifest, materialized};
use grexal_sidecar::store::Store;

struct Args {
    socket: Option<PathBuf>,
    id: String,
    requests: usize,
}

fn args() -> Args {
    let mut args = Args {
        socket: None,
        id: "openai".into(),
        requests: 40_000,
    };
    let mut positional = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--requests" {
            args.requests = it
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--requests N");
        } else {
            positional.push(arg);
        }
    }
    if let Some(socket) = positional.first() {
        args.socket = Some(PathBuf::from(socket));
    }
    if let Some(id) = positional.get(1) {
        args.id = id.clone();
    }
    args
}

struct Result {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Result {
    fn report(&mut self, label: &str) {
        self.latencies.sort_unstable();
        let pct = |p: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies[i].as_secs_f64() * 1e6
        };
        let rate = self.latencies.len() as f64 / self.elapsed.as_secs_f64();
        println!(
            "{label:<34} p50 {:>7.1} µs   p99 {:>7.1} µs   {:>9.0} req/s   ({} requests)",
            pct(0.5),
            pct(0.99),
            rate,
            self.latencies.len()
        );
    }
}

/// Runs `clients` threads, each doing `per_client` sequential operations after a warm-up.
fn run<F, S>(clients: usize, per_client: usize, setup: S) -> Result
where
    S: Fn() -> F + Sync,
    F: FnMut(),
{
    let barrier = std::sync::Barrier::new(clients + 1);
    let (results, elapsed) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let barrier = &barrier;
                let setup = &setup;
                scope.spawn(move || {
                    let mut op = setup();
                    for _ in 0..(per_client / 10).clamp(10, 1000) {
                        op();
                    }
                    barrier.wait();
                    let mut latencies = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let start = Instant::now();
                        op();
                        latencies.push(start.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<Vec<Duration>> = handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect();
        (results, start.elapsed())
    });
    Result {
        latencies: results.into_iter().flatten().collect(),
        elapsed,
    }
}

/// One keep-alive connection sending `request` and reading one response at a time.
struct Conn {
    stream: UnixStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(socket: &Path, id: &str) -> Self {
        let stream = UnixStream::connect(socket).expect("connect to the socket");
        let request =
            format!("GET /v1/connections/{id} HTTP/1.1\r\nHost: sidecar\r\n\r\n").into_bytes();
        Conn {
            stream,
            request,
            buf: Vec::with_capacity(4096),
        }
    }

    fn call(&mut self) {
        self.stream.write_all(&self.request).expect("write");
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).expect("head");
                assert!(
                    head.starts_with("HTTP/1.1 200"),
                    "unexpected response: {head}"
                );
                let length: usize = head
                    .split("\r\n")
                    .find_map(|l| {
                        l.split_once(':')
                            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    })
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .expect("content-length");
                if self.buf.len() >= end + 4 + length {
                    return;
                }
            }
        }
    }
}

fn main() {
    let args = args();
    let _dir;
    let mut _runtime = None;
    let socket = match &args.socket {
        Some(socket) => socket.clone(),
        None => {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("sidecar.sock");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let store = Arc::new(Store::new(
                manifest(),
                None,
                inert_injector(),
                EventBus::new(),
            ));
            store
                .install_materialized(materialized(1, "sk-bench-0123456789abcdef0123456789abcdef"));
            let mut state = ApiState::new(store, None);
            state.limits = ApiLimits {
                max_connections: 1024,
                ..ApiLimits::default()
            };
            let listener = runtime
                .block_on(async { api::bind(&path, None) })
                .expect("bind");
            runtime.spawn(api::serve(
                listener,
                state,
                tokio_util::sync::CancellationToken::new(),
            ));
            _runtime = Some(runtime);
            _dir = dir;
            path
        }
    };
    println!(
        "ctx.connect benchmark: socket {} id {:?}, {} requests per scenario, {} CPUs available",
        socket.display(),
        args.id,
        args.requests,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // The same body in a tmpfs file: the floor for any way of handing it to the agent.
    let body = {
        let mut conn = Conn::new(&socket, &args.id);
        conn.call();
        let end = conn
            .buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(0)
            + 4;
        conn.buf[end..].to_vec()
    };
    let floor_dir = tempfile::Builder::new()
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tmpfs dir");
    let floor_file = floor_dir.path().join("body.json");
    std::fs::write(&floor_file, &body).expect("write floor file");

    for clients in [1usize, 32] {
        let per_client = (args.requests / clients).max(1);
        run(clients, per_client, || {
            let mut conn = Conn::new(&socket, &args.id);
            move || conn.call()
        })
        .report(&format!("socket, {clients:>2} keep-alive client(s)"));
        run(clients, per_client, || {
            let path = floor_file.clone();
            let mut buf = Vec::with_capacity(4096);
            move || {
                buf.clear();
                let mut file = std::fs::File::open(&path).expect("open");
                file.read_to_end(&mut buf).expect("read");
            }
        })
        .report(&format!("tmpfs file, {clients:>2} reader(s)"));
    }
}
