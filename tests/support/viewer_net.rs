//! The viewer tests' network: a raw HTTP/1.1 client that sends paths exactly as written (no
//! normalisation of `..`), and a user's link simulated by a loopback proxy with latency and
//! a shared downlink bottleneck (this kernel has no netem).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP/1.1 GET: the path goes on the wire exactly as given.
pub async fn raw_get(base: &str, path: &str) -> (u16, HashMap<String, String>, Vec<u8>) {
    raw_get_with(base, path, &[]).await
}

/// [`raw_get`] with extra request headers; a chunked body comes back de-chunked.
pub async fn raw_get_with(
    base: &str,
    path: &str,
    request_headers: &[(&str, &str)],
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let extra: String = request_headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<HashMap<_, _>>();
    let mut body = &raw[split + 4..];
    if headers.get("transfer-encoding").map(String::as_str) != Some("chunked") {
        return (status, headers, body.to_vec());
    }
    let mut dechunked = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = std::str::from_utf8(&body[..eol]).expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            break;
        }
        dechunked.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[eol + 2 + size + 2..];
    }
    (status, headers, dechunked)
}

/// A TCP proxy on loopback in front of `upstream` that delivers every chunk `one_way` after
/// it was read, in each direction, in order: a link with that much latency and no bandwidth
/// limit (this kernel has no netem). Returns its `http://` base and a count of the
/// connections the browser opened through it.
pub async fn slow_link(upstream: &str, one_way: Duration) -> (String, Arc<AtomicUsize>) {
    let link = link(upstream, one_way, None).await;
    (link.base, link.connections)
}

/// A user's link, simulated by a loopback proxy (this kernel has no netem).
pub struct Link {
    /// The proxy's `http://` base.
    pub base: String,
    /// Connections the browser opened through it.
    pub connections: Arc<AtomicUsize>,
    /// Bytes delivered to the browser, over all its connections.
    pub bytes_down: Arc<AtomicUsize>,
}

/// A proxy in front of `upstream` that delivers every chunk `one_way` after it was read, in
/// order, and, with `downlink` (bytes per second), sends what the server says to the browser
/// through one bottleneck that all the browser's connections share, as a home or mobile
/// link does: a chunk of n bytes leaves n / downlink after the one before it.
pub async fn link(upstream: &str, one_way: Duration, downlink: Option<u64>) -> Link {
    let upstream = upstream
        .strip_prefix("http://")
        .expect("http base")
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let bytes_down = Arc::new(AtomicUsize::new(0));
    let (counted, counted_down) = (connections.clone(), bytes_down.clone());
    // When the bottleneck has sent everything queued so far.
    let down_busy_until = Arc::new(Mutex::new(tokio::time::Instant::now()));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_r, client_w) = client.into_split();
            let (server_r, server_w) = server.into_split();
            tokio::spawn(delayed_copy(client_r, server_w, one_way, None));
            let down = Bottleneck {
                busy_until: down_busy_until.clone(),
                bytes_per_second: downlink,
                delivered: counted_down.clone(),
            };
            tokio::spawn(delayed_copy(server_r, client_w, one_way, Some(down)));
        }
    });
    Link {
        base: format!("http://{addr}"),
        connections,
        bytes_down,
    }
}

/// One direction's shared bandwidth limit (none when `bytes_per_second` is `None`).
struct Bottleneck {
    busy_until: Arc<Mutex<tokio::time::Instant>>,
    bytes_per_second: Option<u64>,
    delivered: Arc<AtomicUsize>,
}

impl Bottleneck {
    /// When a chunk of `n` bytes read now has gone through the bottleneck.
    fn sent_at(&self, n: usize) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        self.delivered.fetch_add(n, Ordering::SeqCst);
        let Some(rate) = self.bytes_per_second else {
            return now;
        };
        let mut busy_until = self.busy_until.lock().expect("link clock");
        let done = (*busy_until).max(now) + Duration::from_secs_f64(n as f64 / rate as f64);
        *busy_until = done;
        done
    }
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    bottleneck: Option<Bottleneck>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let sent = match &bottleneck {
            Some(b) => b.sent_at(n),
            None => tokio::time::Instant::now(),
        };
        if tx.send((sent + delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
