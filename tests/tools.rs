//! The real binary's `keygen` and `seal`: file modes, overwrite refusal, a sealed bundle
//! that opens, clear errors with distinct exit codes, and no secret on stdout/stderr.

#[path = "support/bundle.rs"]
mod support_bundle;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use grexal_sidecar::bundle::Opener;
use grexal_sidecar::keys::{PlatformPublicKey, SandboxSecretKey};
use grexal_sidecar::secret::ExposeSecret;
use support_bundle::{now, sidecar, Run};

const CANARY: &str = "CANARY-7f3a9c-do-not-print";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn keys(d: &Path) {
    sidecar(d, &["keygen", "--kind", "sandbox", "--out-dir", "keys"]).ok();
    sidecar(d, &["keygen", "--kind", "platform", "--out-dir", "keys"]).ok();
}

fn seal(d: &Path, credentials: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "seal",
        "--credentials",
        credentials,
        "--sandbox-id",
        "sbx-t",
        "--sandbox-pub",
        "keys/sandbox.pub",
        "--platform-key",
        "keys/platform.key",
        "--out",
        "out.gxb",
    ];
    args.extend_from_slice(extra);
    sidecar(d, &args)
}

fn assert_no_secret(run: &Run, secrets: &[&str]) {
    for s in secrets {
        assert!(!run.stdout.contains(s), "secret on stdout");
        assert!(!run.stderr.contains(s), "secret on stderr");
    }
}

#[test]
fn keygen_modes_output_and_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for kind in ["sandbox", "platform"] {
        let run = sidecar(d, &["keygen", "--kind", kind, "--out-dir", "keys"]).ok();
        let key = d.join(format!("keys/{kind}.key"));
        let public = d.join(format!("keys/{kind}.pub"));
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&public), 0o644);
        let private_b64 = std::fs::read_to_string(&key).unwrap();
        let public_b64 = std::fs::read_to_string(&public).unwrap();
        assert_eq!(private_b64.len(), 45, "one base64 line of 32 bytes");
        assert!(
            run.stdout.contains(public_b64.trim()),
            "prints the public key"
        );
        assert_no_secret(&run, &[private_b64.trim()]);

        // Refuses to overwrite, leaving the files as they were.
        let again = sidecar(d, &["keygen", "--kind", kind, "--out-dir", "keys"]);
        assert_eq!(again.code, Some(64));
        assert!(again.stderr.contains("already exists") && again.stderr.contains("--force"));
        assert_eq!(std::fs::read_to_string(&key).unwrap(), private_b64);

        let forced = sidecar(
            d,
            &["keygen", "--kind", kind, "--out-dir", "keys", "--force"],
        )
        .ok();
        assert_ne!(std::fs::read_to_string(&key).unwrap(), private_b64);
        assert_eq!(mode(&key), 0o600);
        assert_no_secret(&forced, &[std::fs::read_to_string(&key).unwrap().trim()]);
    }
    // The public file matches the private one.
    let sk = SandboxSecretKey::load(&d.join("keys/sandbox.key")).unwrap();
    assert_eq!(
        sk.public_key().to_base64(),
        std::fs::read_to_string(d.join("keys/sandbox.pub"))
            .unwrap()
            .trim()
    );
}

#[test]
fn sealed_bundle_opens_and_nothing_secret_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys(d);
    let doc = format!(r#"{{"connections":{{"openai":{{"fields":{{"api_key":"{CANARY}"}}}}}}}}"#);
    std::fs::write(d.join("creds.json"), &doc).unwrap();
    let t0 = now();
    let run = seal(d, "creds.json", &["--version", "9", "--expires-in", "120"]).ok();
    let private = std::fs::read_to_string(d.join("keys/platform.key")).unwrap();
    assert_no_secret(&run, &[CANARY, private.trim()]);
    assert_eq!(run.stdout.lines().count(), 1, "one summary line");
    assert!(run.stdout.contains("sbx-t") && run.stdout.contains("version 9"));
    let out = d.join("out.gxb");
    assert_eq!(mode(&out), 0o600);
    let bytes = std::fs::read(&out).unwrap();
    assert!(run.stdout.contains(&format!("size {} bytes", bytes.len())));
    assert!(
        !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
        "plaintext in the bundle"
    );

    let opener = Opener {
        sandbox_id: "sbx-t".into(),
        sandbox_key: SandboxSecretKey::load(&d.join("keys/sandbox.key")).unwrap(),
        trusted: vec![PlatformPublicKey::load(&d.join("keys/platform.pub")).unwrap()],
    };
    let opened = opener.open(&bytes, now(), None).unwrap();
    assert_eq!(opened.version, 9);
    assert!(opened.issued_at >= t0 && opened.expires_at == opened.issued_at + 120);
    assert_eq!(opened.plaintext.expose_secret(), doc.as_bytes());
}

/// A document written for `dev`, whose file entry gives `"path"` (relative to the
/// document's directory), is sealed with the file's contents as `content_base64` and its
/// name as `filename`: a sandbox refuses `"path"` (89). The rest is sealed as written.
#[test]
fn a_path_entry_is_sealed_with_the_files_contents() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys(d);
    std::fs::create_dir_all(d.join("project/.grexal/keys")).unwrap();
    let key_file = format!("-----BEGIN {CANARY}-----\n\u{0}\u{ff}");
    std::fs::write(d.join("project/.grexal/keys/deploy.pem"), &key_file).unwrap();
    let doc = format!(
        r#"{{"connections": {{"openai": {{"fields": {{"api_key": "{CANARY}"}}}},
            "deploy_key": {{"mime_type": "application/x-pem-file", "path": "keys/deploy.pem"}}}}}}"#
    );
    std::fs::write(d.join("project/.grexal/connections.json"), &doc).unwrap();
    let run = seal(d, "project/.grexal/connections.json", &[]).ok();
    assert_no_secret(&run, &[CANARY]);
    assert!(
        run.stdout.contains("embedded keys/deploy.pem")
            && run.stdout.contains("deploy_key")
            && run.stdout.contains(&format!("({} bytes)", key_file.len())),
        "{}",
        run.stdout
    );
    let opener = Opener {
        sandbox_id: "sbx-t".into(),
        sandbox_key: SandboxSecretKey::load(&d.join("keys/sandbox.key")).unwrap(),
        trusted: vec![PlatformPublicKey::load(&d.join("keys/platform.pub")).unwrap()],
    };
    let bytes = std::fs::read(d.join("out.gxb")).unwrap();
    let opened = opener.open(&bytes, now(), None).unwrap();
    let sealed: serde_json::Value =
        serde_json::from_slice(opened.plaintext.expose_secret()).unwrap();
    let entry = &sealed["connections"]["deploy_key"];
    assert_eq!(
        *entry,
        serde_json::json!({
            "mime_type": "application/x-pem-file",
            "filename": "deploy.pem",
            "content_base64": base64::engine::general_purpose::STANDARD.encode(&key_file),
        })
    );
    assert_eq!(sealed["connections"]["openai"]["fields"]["api_key"], CANARY);

    // A file that is not there: named with its connection, nothing written (65, as `dev`).
    std::fs::remove_file(d.join("out.gxb")).unwrap();
    std::fs::remove_file(d.join("project/.grexal/keys/deploy.pem")).unwrap();
    let run = seal(d, "project/.grexal/connections.json", &[]);
    assert_eq!(run.code, Some(65), "{}", run.stderr);
    assert!(
        run.stderr.contains(r#"connections["deploy_key"]."path""#)
            && run.stderr.contains("deploy.pem")
            && run.stderr.contains("No such file"),
        "{}",
        run.stderr
    );
    assert_no_secret(&run, &[CANARY]);
    assert!(!d.join("out.gxb").exists());
}

#[test]
fn bad_inputs_give_clear_errors_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys(d);
    std::fs::write(d.join("good.json"), r#"{"connections":{}}"#).unwrap();
    std::fs::write(d.join("notjson.json"), format!("connections: {CANARY}")).unwrap();
    std::fs::write(
        d.join("shape.json"),
        format!(r#"{{"connections":"{CANARY}"}}"#),
    )
    .unwrap();
    std::fs::write(
        d.join("array.json"),
        format!(r#"{{"connections":["{CANARY}"]}}"#),
    )
    .unwrap();
    std::fs::write(
        d.join("nonutf8.json"),
        b"{\"connections\":{\"a\":\"\xff\xfe\"}}",
    )
    .unwrap();
    std::fs::write(d.join("keys/garbage.key"), format!("{CANARY}\n")).unwrap();
    std::fs::set_permissions(
        d.join("keys/garbage.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // Over the plaintext limit (16 MiB less the bundle overhead).
    let big = std::fs::File::create(d.join("big.json")).unwrap();
    big.set_len(17 * 1024 * 1024).unwrap();

    let cases: &[(&str, &str, &[&str], i32, &str)] = &[
        (
            "missing credentials",
            "nope.json",
            &[],
            66,
            "cannot read credential file",
        ),
        ("not json", "notjson.json", &[], 65, "not JSON"),
        (
            "wrong shape",
            "shape.json",
            &[],
            65,
            "\"connections\" object",
        ),
        (
            "array connections",
            "array.json",
            &[],
            65,
            "\"connections\" object",
        ),
        ("not utf-8", "nonutf8.json", &[], 65, "not UTF-8"),
        ("too large", "big.json", &[], 65, "over the"),
        (
            "bad sandbox id",
            "good.json",
            &["--sandbox-id", "a/b"],
            64,
            "--sandbox-id",
        ),
        (
            "zero expiry",
            "good.json",
            &["--expires-in", "0"],
            64,
            "--expires-in",
        ),
        (
            "missing sandbox pub",
            "good.json",
            &["--sandbox-pub", "keys/none.pub"],
            66,
            "none.pub",
        ),
        // Open fails with ENOTDIR: a key that cannot be read is missing input too, even
        // for root, whom no mode keeps out.
        (
            "unreadable sandbox pub",
            "good.json",
            &["--sandbox-pub", "good.json/sandbox.pub"],
            66,
            "good.json/sandbox.pub",
        ),
        (
            "platform key is not a key",
            "good.json",
            &["--platform-key", "keys/garbage.key"],
            78,
            "not one line of base64",
        ),
    ];
    for (name, creds, extra, code, needle) in cases {
        // Each extra flag replaces the default one, or is added.
        let mut args: Vec<&str> = vec![
            "seal",
            "--credentials",
            creds,
            "--sandbox-id",
            "sbx-t",
            "--sandbox-pub",
            "keys/sandbox.pub",
            "--platform-key",
            "keys/platform.key",
            "--out",
            "out.gxb",
        ];
        for pair in extra.chunks(2) {
            match args.iter().position(|a| *a == pair[0]) {
                Some(at) => args[at + 1] = pair[1],
                None => args.extend_from_slice(pair),
            }
        }
        let run = sidecar(d, &args);
        assert_eq!(run.code, Some(*code), "{name}");
        assert!(
            run.stderr.contains("grexal-sidecar seal: error:"),
            "{name}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(needle), "{name}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{name}");
        assert_no_secret(&run, &[CANARY]);
        assert!(!d.join("out.gxb").exists(), "{name}: wrote a bundle");
    }

    // A private key readable by others is refused (and not printed).
    std::fs::set_permissions(
        d.join("keys/platform.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let run = seal(d, "good.json", &[]);
    assert_eq!(run.code, Some(78));
    assert!(run.stderr.contains("readable by group or others"));
    let private = std::fs::read_to_string(d.join("keys/platform.key")).unwrap();
    assert_no_secret(&run, &[private.trim()]);
}
