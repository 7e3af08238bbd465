//! The command line itself: a bad one exits 64 (Usage, as docs/api.md says) with clap's
//! message, `--help` and `--version` succeed, and boolean environment variables take the
//! usual spellings.

mod support;

use support::*;

#[test]
fn a_bad_command_line_exits_with_the_usage_code() {
    for args in [
        &["run", "--no-such-flag"][..],
        &["dev", "--screen"][..],
        &["no-such-subcommand"][..],
    ] {
        let out = run_to_end(command().args(args));
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// A flag that `run` would silently ignore next to (or without) another is a usage error,
/// given as a flag or through its environment variable (a deployment's env file), and the
/// message names the flag it lacks or conflicts with. Nothing is started: the manifest named
/// does not exist, and reading it would fail otherwise (66).
#[test]
fn flags_run_would_ignore_are_usage_errors() {
    let run = [
        "run",
        "--sandbox-id",
        "s",
        "--manifest",
        "/nonexistent/grexal.json",
    ];
    // Each case: flags, environment variables, the flag the message must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--control-token-file", "/t"], &[], "--control-listen"),
        (
            &[],
            &[("GREXAL_CONTROL_TOKEN_FILE", "/t")],
            "--control-listen",
        ),
        (
            &["--public-url", "https://edge.example"],
            &[],
            "--control-listen",
        ),
        (
            &[],
            &[("GREXAL_PUBLIC_URL", "https://edge.example")],
            "--control-listen",
        ),
        (
            &["--sandbox-key", "/k", "--public-key-out", "/p"],
            &[],
            "--sandbox-key",
        ),
        (
            &[],
            &[
                ("GREXAL_SANDBOX_KEY", "/k"),
                ("GREXAL_PUBLIC_KEY_OUT", "/p"),
            ],
            "--sandbox-key",
        ),
        (&["--bundle", "/b"], &[], "--sandbox-key"),
        (&["--bundle-timeout", "5"], &[], "--control-listen"),
        (
            &[
                "--sandbox-key",
                "/k",
                "--bundle",
                "/b",
                "--control-listen",
                "127.0.0.1:1",
            ],
            &[
                ("GREXAL_CONTROL_TOKEN_FILE", "/t"),
                ("GREXAL_BUNDLE_TIMEOUT", "5"),
            ],
            "--bundle",
        ),
    ];
    for (args, env, names) in cases {
        let out = run_to_end(command().args(run).args(*args).envs(env.iter().copied()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains("error:") && stderr.contains(names),
            "{args:?} {env:?}: names {names}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?} {env:?}");
    }
}

#[test]
fn help_and_version_succeed_on_stdout() {
    for args in [&["--help"][..], &["run", "--help"][..], &["--version"][..]] {
        let out = run_to_end(command().args(args));
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("grexal-sidecar"),
            "{args:?}"
        );
    }
}

#[test]
fn grexal_desktop_takes_the_usual_boolean_spellings() {
    let dir = open_tempdir();
    // A manifest with nothing to install and no desktop of its own: `--desktop` alone
    // decides whether the daemon starts one. The "Chromium" does not exist, so a desktop
    // start fails (71) before the agent (`true`, 0) would run.
    write(
        &dir.path().join("grexal.json"),
        r#"{"manifest_version": 1, "entrypoint": "agent.py", "connections": []}"#,
        0o644,
    );
    let dev = |value: &str| {
        let d = dir.path();
        let out = run_to_end(
            command()
                .env("GREXAL_DESKTOP", value)
                .current_dir(d)
                .arg("dev")
                .args(["--chromium", "/nonexistent/chromium"])
                .arg("--desktop-run-dir")
                .arg(d.join("desk"))
                .arg("--browser-profile")
                .arg(d.join("profile"))
                .args(["--", "true"]),
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for value in ["1", "yes", "on", "true", "TRUE"] {
        let (code, stderr) = dev(value);
        assert_eq!(
            code,
            Some(71),
            "GREXAL_DESKTOP={value} starts the desktop: {stderr}"
        );
        assert!(
            stderr.contains("desktop"),
            "GREXAL_DESKTOP={value}: {stderr}"
        );
    }
    for value in ["0", "no", "off", "false"] {
        let (code, stderr) = dev(value);
        assert_eq!(
            code,
            Some(0),
            "GREXAL_DESKTOP={value} starts none: {stderr}"
        );
    }
    let missing = dir.path().join("no-manifest.json");
    let out = run_to_end(
        command()
            .env("GREXAL_DESKTOP", "maybe")
            .arg("dev")
            .arg("--manifest")
            .arg(&missing),
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--desktop"));
}
