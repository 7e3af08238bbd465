//! `grexal-sidecar check`: validates a manifest and prints what it declares; an invalid
//! declaration names the connection and the field, with the manifest exit code.

mod support;

use std::path::Path;

use support::*;

#[test]
fn check_prints_the_declared_connections() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent/grexal.json");
    let out = run_to_end(command().arg("check").arg(&manifest));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid, 4 connection(s)"), "{stdout}");
    for line in [
        "openai",
        "secret_input",
        "github",
        "oauth_redirect",
        "deploy_key",
        "file_upload",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }

    let out = run_to_end(command().arg("check").arg("--json").arg(&manifest));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["connections"].as_array().map(Vec::len), Some(4));
    assert_eq!(doc["connections"][2]["auth_mode"], "oauth_redirect");
}

#[test]
fn check_names_the_connection_and_field_of_an_invalid_declaration() {
    let dir = open_tempdir();
    let cases = [
        (
            r#"{"connections": [{"id": "a", "display_name": "A", "auth_mode": "secret_input", "fields": []}]}"#,
            r#"id "a""#,
        ),
        (
            r#"{"connections": [{"id": "../x", "display_name": "X", "auth_mode": "browser_login"}]}"#,
            "connections[0]",
        ),
        (
            r#"{"connections": [{"id": "a", "display_name": "A", "auth_mode": "magic"}]}"#,
            "magic",
        ),
        (
            r#"{"connections": [{"id": "a", "display_name": "A", "auth_mode": "browser_login"},
                                {"id": "a", "display_name": "B", "auth_mode": "browser_login"}]}"#,
            "connections[1]",
        ),
        ("{not json", "JSON"),
        // A repeated key was taken last-wins: 0 connections, or the later delivery.
        (
            r#"{"connections": [{"id": "gh", "display_name": "GH", "auth_mode": "browser_login"}],
                "connections": []}"#,
            "connections: duplicate key",
        ),
        (
            r#"{"connections": [{"id": "gh", "display_name": "GH", "auth_mode": "secret_input",
                "delivery": "env", "delivery": "runtime_object",
                "fields": [{"name": "token", "label": "T", "secret": true}]}]}"#,
            r#"connections[0] (id "gh").delivery: duplicate key"#,
        ),
    ];
    for (i, (doc, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("m{i}.json"));
        write(&path, doc, 0o644);
        let out = run_to_end(command().arg("check").arg(&path));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "case {i}: {stderr}");
        assert!(
            stderr.contains(needle),
            "case {i}: names {needle}: {stderr}"
        );
    }
}

/// A manifest that cannot be read is a missing input (66), as for every command and every
/// other input file, named with the OS's reason; an invalid one stays 65 (above).
#[test]
fn a_missing_or_unreadable_manifest_is_no_input() {
    let dir = open_tempdir();
    let absent = dir.path().join("absent.json");
    let out = run_to_end(command().arg("check").arg(&absent));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(
        stderr.contains("absent.json") && stderr.contains("No such file"),
        "{stderr}"
    );
    // A directory opens but cannot be read.
    let out = run_to_end(command().arg("check").arg(dir.path()));
    assert_eq!(out.status.code(), Some(66), "{:?}", out);
    for sub in [&["dev"][..], &["run", "--sandbox-id", "s"][..]] {
        let out = run_to_end(
            command()
                .current_dir(dir.path())
                .args(sub)
                .arg("--manifest")
                .arg(&absent)
                .arg("--socket")
                .arg(dir.path().join("s.sock"))
                .arg("--credentials-dir")
                .arg(dir.path().join("creds"))
                .arg("--env-file")
                .arg(dir.path().join("agent.env"))
                .args(["--", "true"]),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(66), "{sub:?}: {stderr}");
        assert!(
            stderr.contains("absent.json") && stderr.contains("No such file"),
            "{sub:?}: {stderr}"
        );
    }
}

#[test]
fn unknown_top_level_and_connection_keys_are_ignored() {
    let dir = open_tempdir();
    let doc = r#"{"manifest_version": 3, "input_schema": {}, "pricing": {"x": 1},
        "runtime": {"sandbox_template": "desktop", "gpu": true},
        "connections": [{"id": "bank", "display_name": "Bank", "auth_mode": "browser_login",
                         "login_url": "https://bank.example", "icon": "bank.svg"}]}"#;
    let path = dir.path().join("grexal.json");
    write(&path, doc, 0o644);
    let out = run_to_end(command().arg("check").arg(&path));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("runtime.sandbox_template = desktop"),
        "{stdout}"
    );
}

/// A manifest with one env-delivered secret_input field named `env_var`.
fn env_field_manifest(env_var: &str) -> String {
    serde_json::json!({"connections": [{
        "id": "tool", "display_name": "Tool", "auth_mode": "secret_input", "delivery": "env",
        "fields": [{"name": "value", "label": "Value", "secret": true, "env_var": env_var}]}]})
    .to_string()
}

/// Env names whose user-supplied value would decide which program, library or startup
/// code the agent runs, or where its traffic goes and whom it trusts (the second review's,
/// each of which `check` accepted): refused by `check`, `run` and `dev` alike with the
/// manifest's exit code, naming the field and the name; credential names still pass.
#[test]
fn env_names_that_steer_the_agent_are_refused_by_check_run_and_dev() {
    let dir = open_tempdir();
    // The names a security review found `check` accepting (the unit tests hold the same list).
    let refused = include_str!("data/steering-env-names.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    for name in refused {
        let path = dir.path().join(format!("{name}.json"));
        write(&path, env_field_manifest(name), 0o644);
        let out = run_to_end(command().arg("check").arg(&path));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{name}: {stderr}");
        assert!(
            stderr.contains(r#"connections[0] (id "tool").fields[0].env_var"#)
                && stderr.contains(&format!("env name {name:?} is not allowed: ")),
            "{name}: {stderr}"
        );
    }
    for name in ["OPENAI_API_KEY", "GOOGLE_API_KEY", "CARGO_REGISTRY_TOKEN"] {
        let path = dir.path().join(format!("{name}.json"));
        write(&path, env_field_manifest(name), 0o644);
        let out = run_to_end(command().arg("check").arg(&path));
        assert!(out.status.success(), "{name}: {out:?}");
    }

    // `run` and `dev` read the manifest first, through the same check: nothing starts.
    let manifest = dir.path().join("HTTPS_PROXY.json");
    let marker = dir.path().join("agent-ran");
    for sub in [&["dev"][..], &["run", "--sandbox-id", "s"][..]] {
        let out = run_to_end(
            command()
                .current_dir(dir.path())
                .args(sub)
                .arg("--manifest")
                .arg(&manifest)
                .arg("--socket")
                .arg(dir.path().join("s.sock"))
                .arg("--credentials-dir")
                .arg(dir.path().join("creds"))
                .arg("--env-file")
                .arg(dir.path().join("agent.env"))
                .arg("--")
                .arg("touch")
                .arg(&marker),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{sub:?}: {stderr}");
        assert!(
            stderr.contains(r#"env name "HTTPS_PROXY" is not allowed: "#),
            "{sub:?}: {stderr}"
        );
        assert!(!marker.exists(), "{sub:?}: the agent ran");
    }
}
