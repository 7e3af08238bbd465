//! Interop with an independent implementation: tests/py/bundle_interop.py, written from
//! docs/bundle-format.md with Python's `cryptography` only.
//!
//! (a) Python makes the keys (our key-file format) and seals; the daemon's `Opener` opens.
//! (b) The real binary's `keygen` and `seal` make a bundle; Python verifies and opens it.

#[path = "support/bundle.rs"]
mod support_bundle;

use grexal_sidecar::bundle::{BundleError, Opener};
use grexal_sidecar::keys::{load_trusted, SandboxSecretKey};
use grexal_sidecar::secret::ExposeSecret;
use sha2::Digest;
use support_bundle::{now, python, python_available, sidecar};

const CREDENTIALS: &str = r#"{"connections":{"openai":{"fields":{"api_key":"sk-interop-ÄÖ-canary"}},"google":{"access_token":"ya29.x","token_type":"Bearer"}}}"#;

#[test]
fn python_seals_daemon_opens() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    python(d, &["keygen", "keys"]).ok();
    std::fs::write(d.join("creds.json"), CREDENTIALS).unwrap();
    std::fs::write(
        d.join("trusted"),
        format!(
            "# platform\n{}",
            std::fs::read_to_string(d.join("keys/platform.pub")).unwrap()
        ),
    )
    .unwrap();
    let t = now();
    let seal = |version: u64, sandbox: &str, out: &str| {
        python(
            d,
            &[
                "seal",
                "--credentials",
                "creds.json",
                "--sandbox-id",
                sandbox,
                "--sandbox-pub",
                "keys/sandbox.pub",
                "--platform-key",
                "keys/platform.key",
                "--version",
                &version.to_string(),
                "--issued-at",
                &t.to_string(),
                "--expires-at",
                &(t + 600).to_string(),
                "--out",
                out,
            ],
        )
        .ok();
        std::fs::read(d.join(out)).unwrap()
    };
    let bytes = seal(7, "sbx-py.1", "b1");

    // The key files Python wrote load through our key-file code (and pass its mode check).
    let opener = Opener {
        sandbox_id: "sbx-py.1".into(),
        sandbox_key: SandboxSecretKey::load(&d.join("keys/sandbox.key")).unwrap(),
        trusted: load_trusted(&d.join("trusted")).unwrap(),
    };
    let opened = opener.open(&bytes, t, None).unwrap();
    assert_eq!(opened.sandbox_id, "sbx-py.1");
    assert_eq!(opened.version, 7);
    assert_eq!(opened.issued_at, t);
    assert_eq!(opened.expires_at, t + 600);
    assert_eq!(opened.plaintext.expose_secret(), CREDENTIALS.as_bytes());

    // The same Python bundle is refused for the right reasons.
    assert_eq!(
        opener.open(&bytes, t, Some(7)).unwrap_err(),
        BundleError::Replayed {
            version: 7,
            installed: 7
        }
    );
    assert_eq!(
        opener.open(&bytes, t + 601, None).unwrap_err(),
        BundleError::Expired {
            expires_at: t + 600,
            now: t + 601
        }
    );
    let other = seal(8, "sbx-other", "b2");
    assert!(matches!(
        opener.open(&other, t, None),
        Err(BundleError::WrongSandbox { .. })
    ));
    let mut tampered = bytes.clone();
    let n = tampered.len();
    tampered[n - 100] ^= 1; // inside the ciphertext
    assert_eq!(
        opener.open(&tampered, t, None).unwrap_err(),
        BundleError::Tampered
    );
    let stranger = Opener {
        trusted: vec![grexal_sidecar::keys::PlatformSigningKey::generate().public_key()],
        sandbox_id: "sbx-py.1".into(),
        sandbox_key: SandboxSecretKey::load(&d.join("keys/sandbox.key")).unwrap(),
    };
    assert_eq!(
        stranger.open(&bytes, t, None).unwrap_err(),
        BundleError::Untrusted
    );
}

#[test]
fn binary_seals_python_opens() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sidecar(d, &["keygen", "--kind", "sandbox", "--out-dir", "keys"]).ok();
    sidecar(d, &["keygen", "--kind", "platform", "--out-dir", "keys"]).ok();
    std::fs::write(d.join("creds.json"), CREDENTIALS).unwrap();
    std::fs::copy(d.join("keys/platform.pub"), d.join("trusted")).unwrap();
    let before = now();
    let run = sidecar(
        d,
        &[
            "seal",
            "--credentials",
            "creds.json",
            "--sandbox-id",
            "sbx-rs:2",
            "--sandbox-pub",
            "keys/sandbox.pub",
            "--platform-key",
            "keys/platform.key",
            "--version",
            "42",
            "--expires-in",
            "900",
            "--out",
            "bundle.gxb",
        ],
    )
    .ok();
    assert!(!run.stdout.contains("canary") && !run.stderr.contains("canary"));
    let after = now();

    let open = |sandbox: &str, now: u64| {
        python(
            d,
            &[
                "open",
                "--bundle",
                "bundle.gxb",
                "--sandbox-key",
                "keys/sandbox.key",
                "--trusted",
                "trusted",
                "--sandbox-id",
                sandbox,
                "--now",
                &now.to_string(),
            ],
        )
    };
    let out = open("sbx-rs:2", after).ok();
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["sandbox_id"], "sbx-rs:2");
    assert_eq!(v["version"], 42);
    let issued = v["issued_at"].as_u64().unwrap();
    assert!(
        (before..=after).contains(&issued),
        "issued_at {issued} not in {before}..={after}"
    );
    assert_eq!(v["expires_at"].as_u64().unwrap(), issued + 900);
    assert_eq!(
        v["plaintext_sha256"],
        hex::encode(sha2::Sha256::digest(CREDENTIALS.as_bytes()))
    );
    assert_eq!(v["plaintext_is_credentials"], true);

    // The Python verifier can fail: wrong sandbox, expired, and a flipped signature byte.
    let wrong = open("sbx-other", after);
    assert_eq!(wrong.code, Some(1));
    assert!(wrong.stderr.contains("bundle_wrong_sandbox"));
    let expired = open("sbx-rs:2", issued + 901);
    assert!(expired.stderr.contains("bundle_expired"));
    let mut bytes = std::fs::read(d.join("bundle.gxb")).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(d.join("bundle.gxb"), &bytes).unwrap();
    let tampered = open("sbx-rs:2", after);
    assert!(tampered.stderr.contains("bundle_tampered"));
}
