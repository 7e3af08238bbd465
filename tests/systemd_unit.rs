//! The shipped systemd unit passes `systemd-analyze verify` without a single warning
//! (verify exits 0 on unknown keys and bad values, so any output is a failure), with
//! `ExecStart=` pointed at the binary this build produced.

use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT_NAME: &str = "grexal-sidecar.service";
const INSTALLED_BINARY: &str = "/usr/local/bin/grexal-sidecar";
/// `systemd-analyze security` exposure, times ten; the unit scores 5.0 today.
const MAX_EXPOSURE: &str = "55";

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(UNIT_NAME);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `systemd-analyze`, or `None` to skip (only allowed outside CI).
fn analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing and CI is set"
        );
        eprintln!("skipped: systemd-analyze not installed");
    }
    found
}

/// Writes `text` as the unit into a fresh temp dir, with ExecStart on the built binary.
fn staged(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(UNIT_NAME);
    let text = text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_grexal-sidecar"));
    std::fs::write(&path, text).expect("write unit");
    (dir, path)
}

fn verify(analyze: &Path, unit: &Path) -> (bool, String) {
    let out = Command::new(analyze)
        .arg("verify")
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn unit_starts_the_installed_binary() {
    let text = unit_text();
    let exec: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    // The agent's command from the env file, split at whitespace by systemd.
    assert_eq!(
        exec,
        [format!(
            "ExecStart={INSTALLED_BINARY} run -- $GREXAL_AGENT_COMMAND"
        )]
    );
    assert!(text.lines().any(|l| l == "Type=notify"));
}

#[test]
fn unit_verifies_without_warnings() {
    let Some(analyze) = analyze() else { return };
    let (_dir, unit) = staged(&unit_text());
    let (ok, output) = verify(&analyze, &unit);
    assert!(
        ok && output.trim().is_empty(),
        "systemd-analyze verify complained:\n{output}"
    );
}

#[test]
fn a_bad_key_is_caught() {
    // The check above must be able to fail: the same unit with one unknown key does.
    let Some(analyze) = analyze() else { return };
    let (_dir, unit) =
        staged(&unit_text().replace("[Service]\n", "[Service]\nProtectEverything=yes\n"));
    let (ok, output) = verify(&analyze, &unit);
    assert!(
        !ok || output.contains("ProtectEverything"),
        "an unknown key went unnoticed:\n{output}"
    );
}

#[test]
fn unit_exposure_stays_low() {
    let Some(analyze) = analyze() else { return };
    let (_dir, unit) = staged(&unit_text());
    let out = Command::new(&analyze)
        .args([
            "security",
            "--offline=yes",
            "--no-pager",
            &format!("--threshold={MAX_EXPOSURE}"),
        ])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze security");
    assert!(
        out.status.success(),
        "exposure above {MAX_EXPOSURE}/100:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
