//! Helpers for the bundle and tools tests: run the real binary and python3 with a
//! cleared environment in a temp directory, and report everything on failure.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_grexal-sidecar");
pub const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/bundle_interop.py");

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(what: &str, out: Output) -> Run {
        let run = Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "--- {what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
            run.code, run.stdout, run.stderr
        );
        run
    }

    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "command failed (output above)");
        self
    }
}

/// The real binary, cleared environment (no GREXAL_* leaks in), run in `dir`.
pub fn sidecar(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .output()
        .expect("spawn grexal-sidecar");
    Run::from(&format!("grexal-sidecar {}", args.join(" ")), out)
}

/// Whether python3 with `cryptography`'s HPKE is here. Missing: skip locally, fail in CI.
pub fn python_available() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "from cryptography.hazmat.primitives.hpke import Suite",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with cryptography >= 48 is required when CI is set"
        );
        eprintln!("SKIP: python3 with cryptography's hpke module is not available");
    }
    ok
}

pub fn python(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new("python3")
        .arg(PY)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("spawn python3");
    Run::from(&format!("bundle_interop.py {}", args.join(" ")), out)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
