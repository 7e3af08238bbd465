//! Boot to ready: from spawning `grexal-sidecar run` to its socket answering, with a
//! sealed bundle of 50 connections whose files are written during boot (25 file_upload,
//! 25 secret_input with `delivery: "file"`, two fields each). Next to it, the floor: the
//! same binary spawned for `--version` and waited on (process start and exit alone).
//!
//! ```text
//! cargo build --release --locked --examples
//! target/release/examples/boot_bench [--runs 30] [--bin target/release/grexal-sidecar]
//! ```
//! Every spawned process is pinned to CPU 0 (`taskset -c 0`). The readiness probe polls
//! `GET /readyz` on the socket; a 200 there means the files are written.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

const CONNECTIONS: usize = 50;

fn main() {
    let mut runs = 30usize;
    let mut bin = PathBuf::from("target/release/grexal-sidecar");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--bin" => bin = PathBuf::from(args.next().expect("--bin PATH")),
            other => panic!("unknown argument {other}"),
        }
    }
    let bin = std::fs::canonicalize(&bin).expect("the release binary (cargo build --release)");
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Fixture::new(&bin, dir.path());

    let mut boots = Vec::with_capacity(runs);
    let mut floors = Vec::with_capacity(runs);
    for i in 0..runs {
        floors.push(version_floor(&bin));
        boots.push(fixture.boot_once(i));
    }
    println!(
        "boot to ready, {CONNECTIONS} connections' files written, {runs} runs, pinned to CPU 0:"
    );
    println!("| | p50 | p90 | min |");
    println!("|---|---|---|---|");
    report("`run` spawn → socket answers /readyz", &mut boots);
    report("floor: spawn `--version` → exit", &mut floors);
}

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "| {name} | {} | {} | {} |",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(samples[0])
    );
}

fn version_floor(bin: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .expect("spawn");
    assert!(status.success());
    start.elapsed()
}

struct Fixture {
    bin: PathBuf,
    dir: PathBuf,
}

impl Fixture {
    fn new(bin: &Path, dir: &Path) -> Self {
        let mut connections = Vec::new();
        let mut creds = serde_json::Map::new();
        let b64 = base64::engine::general_purpose::STANDARD;
        for i in 0..CONNECTIONS {
            if i % 2 == 0 {
                let id = format!("file_{i}");
                connections.push(serde_json::json!({
                    "id": id, "display_name": id, "auth_mode": "file_upload",
                    "accepted_extensions": [".pem"], "max_size_bytes": 65536
                }));
                let content = vec![b'k'; 4096];
                creds.insert(
                    id,
                    serde_json::json!({"filename": "key.pem", "content_base64": b64.encode(content)}),
                );
            } else {
                let id = format!("secret_{i}");
                connections.push(serde_json::json!({
                    "id": id, "display_name": id, "auth_mode": "secret_input", "delivery": "file",
                    "fields": [{"name": "user", "label": "User", "secret": false},
                               {"name": "password", "label": "Password", "secret": true}]
                }));
                creds.insert(
                    id,
                    serde_json::json!({"fields": {"user": "u", "password": "bench-password"}}),
                );
            }
        }
        let manifest = serde_json::json!({"connections": connections});
        std::fs::write(dir.join("grexal.json"), manifest.to_string()).expect("manifest");
        std::fs::write(
            dir.join("creds.json"),
            serde_json::json!({"connections": creds}).to_string(),
        )
        .expect("creds");
        for kind in ["sandbox", "platform"] {
            let ok = Command::new(bin)
                .args(["keygen", "--kind", kind, "--out-dir"])
                .arg(dir.join("keys"))
                .stdout(Stdio::null())
                .status()
                .expect("keygen")
                .success();
            assert!(ok, "keygen {kind}");
        }
        let ok = Command::new(bin)
            .args(["seal", "--sandbox-id", "bench", "--credentials"])
            .arg(dir.join("creds.json"))
            .arg("--sandbox-pub")
            .arg(dir.join("keys/sandbox.pub"))
            .arg("--platform-key")
            .arg(dir.join("keys/platform.key"))
            .arg("--out")
            .arg(dir.join("bundle"))
            .stdout(Stdio::null())
            .status()
            .expect("seal")
            .success();
        assert!(ok, "seal");
        Fixture {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
        }
    }

    fn boot_once(&self, i: usize) -> Duration {
        let run = self.dir.join(format!("run-{i}"));
        std::fs::create_dir(&run).expect("run dir");
        let socket = run.join("sidecar.sock");
        let start = Instant::now();
        let mut child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(&self.bin)
            .args([
                "run",
                "--sandbox-id",
                "bench",
                "--log",
                "warn",
                "--manifest",
            ])
            .arg(self.dir.join("grexal.json"))
            .arg("--sandbox-key")
            .arg(self.dir.join("keys/sandbox.key"))
            .arg("--platform-key")
            .arg(self.dir.join("keys/platform.pub"))
            .arg("--bundle")
            .arg(self.dir.join("bundle"))
            .arg("--socket")
            .arg(&socket)
            .arg("--credentials-dir")
            .arg(run.join("creds"))
            .arg("--env-file")
            .arg(run.join("agent.env"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn run");
        let deadline = start + Duration::from_secs(10);
        let elapsed = loop {
            if ready(&socket) {
                break start.elapsed();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("daemon exited during boot: {status}");
            }
            assert!(Instant::now() < deadline, "not ready after 10 s");
            std::thread::sleep(Duration::from_micros(200));
        };
        let files = std::fs::read_dir(run.join("creds"))
            .expect("creds dir")
            .count();
        assert_eq!(
            files, CONNECTIONS,
            "every connection's directory is written"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = child.wait().expect("wait");
        assert!(status.success(), "clean shutdown");
        elapsed
    }
}

fn ready(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}
