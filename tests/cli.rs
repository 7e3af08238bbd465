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
            &["--control-max-connections", "64"],
            &[],
            "--control-listen",
        ),
        (
            &[],
            &[("GREXAL_CONTROL_MAX_CONNECTIONS", "64")],
            "--control-listen",
        ),
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

/// A `--public-url` with a query or a fragment (every `viewer_url` is `{it}/takeover/{id}`,
/// which would land inside them) is a usage error naming the flag, by flag or environment
/// variable, before anything starts (the manifest named does not exist: 66 otherwise). The
/// query is not echoed: it may hold a secret of the edge's.
#[test]
fn a_public_url_with_a_query_or_fragment_is_a_usage_error() {
    let run = [
        "run",
        "--sandbox-id",
        "s",
        "--manifest",
        "/nonexistent/grexal.json",
        "--control-listen",
        "127.0.0.1:0",
        "--control-token-file",
        "/nonexistent/token",
    ];
    for url in [
        "https://edge.example/sbx?sig=CANARY",
        "https://edge.example/#CANARY",
    ] {
        for by_env in [false, true] {
            let mut cmd = command();
            cmd.args(run);
            match by_env {
                true => cmd.env("GREXAL_PUBLIC_URL", url),
                false => cmd.args(["--public-url", url]),
            };
            let out = run_to_end(&mut cmd);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(64),
                "{url} (env: {by_env}): {stderr}"
            );
            assert!(
                stderr.contains("--public-url")
                    && stderr.contains("query")
                    && !stderr.contains("CANARY"),
                "{url} (env: {by_env}): {stderr}"
            );
            assert!(out.stdout.is_empty(), "{url}");
        }
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

/// A desktop run dir too long for Chromium's profile-lock socket
/// (`{run_dir}/tmp/org.chromium.Chromium.XXXXXX/SingletonSocket`, 107 bytes at most) is
/// refused when the desktop starts, before anything of it is made: exit 71, naming the
/// flag and the limit. Chromium itself would abort at start ("Socket path too long").
#[test]
fn a_desktop_run_dir_too_long_for_chromiums_socket_is_refused_naming_the_flag() {
    let dir = open_tempdir();
    let d = dir.path();
    write(
        &d.join("grexal.json"),
        r#"{"manifest_version": 1, "connections": []}"#,
        0o644,
    );
    let longest = 107 - "/tmp/org.chromium.Chromium.XXXXXX/SingletonSocket".len();
    let run_dir = d.join("r".repeat(longest - d.as_os_str().len()));
    assert_eq!(run_dir.as_os_str().len(), longest + 1);
    let out = run_to_end(
        command()
            .current_dir(d)
            .args(["dev", "--desktop"])
            .arg("--desktop-run-dir")
            .arg(&run_dir)
            .arg("--browser-profile")
            .arg(d.join("profile"))
            .args(["--", "true"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(71), "{stderr}");
    assert!(
        stderr.contains("--desktop-run-dir") && stderr.contains(&format!("at most {longest}")),
        "{stderr}"
    );
    assert!(!run_dir.exists(), "the run dir was made");
}

/// Every duration flag has a range (past some value, adding it to the clock panicked: a
/// huge `--stop-timeout` on the first SIGTERM, exit 101 with the credentials left behind;
/// a huge `--api-request-timeout` on every connection, the API silently dead), and so has
/// `--api-max-connections`. A value out of range, by flag or environment variable, is a
/// usage error naming the flag and the range, before anything starts; the maximum itself
/// is taken.
#[test]
fn numeric_flags_out_of_their_range_are_usage_errors() {
    let dir = open_tempdir();
    let d = dir.path();
    write(
        &d.join("grexal.json"),
        r#"{"manifest_version": 1, "connections": []}"#,
        0o644,
    );
    // (subcommand, flag, variable, min, max)
    let flags = [
        ("dev", "stop-timeout", "GREXAL_STOP_TIMEOUT", 0, 86_400),
        (
            "dev",
            "api-request-timeout",
            "GREXAL_API_REQUEST_TIMEOUT",
            1,
            3_600,
        ),
        (
            "dev",
            "viewer-idle-timeout",
            "GREXAL_VIEWER_IDLE_TIMEOUT",
            1,
            3_600,
        ),
        ("run", "bundle-timeout", "GREXAL_BUNDLE_TIMEOUT", 1, 86_400),
        (
            "dev",
            "desktop-hang-timeout",
            "GREXAL_DESKTOP_HANG_TIMEOUT",
            5,
            3_600,
        ),
        // Not a duration: past 2^61 the connection semaphore panicked, the API dead.
        (
            "dev",
            "api-max-connections",
            "GREXAL_API_MAX_CONNECTIONS",
            1,
            65_536,
        ),
        // At least the platform's reserve (16) and as many again for the viewer.
        (
            "run",
            "control-max-connections",
            "GREXAL_CONTROL_MAX_CONNECTIONS",
            32,
            65_536,
        ),
    ];
    let base = |sub: &str| {
        let mut cmd = command();
        cmd.current_dir(d).arg(sub);
        if sub == "run" {
            // --bundle-timeout needs the control endpoint it waits on.
            cmd.args(["--sandbox-id", "sbx-1", "--public-key-out"])
                .arg(d.join("sandbox.pub"))
                .args(["--control-listen", "127.0.0.1:0", "--control-token-file"])
                .arg(d.join("control.token"));
        }
        cmd.arg("--socket")
            .arg(d.join("sidecar.sock"))
            .arg("--credentials-dir")
            .arg(d.join("creds"))
            .arg("--env-file")
            .arg(d.join("agent.env"));
        cmd
    };
    for (sub, flag, var, min, max) in flags {
        let range = format!("{min}..={max}");
        let mut bad = vec![(max + 1).to_string(), u64::MAX.to_string()];
        if min > 0 {
            bad.push("0".into());
        }
        if min > 1 {
            bad.push((min - 1).to_string());
        }
        for value in &bad {
            // A manifest that is not there: had the value been taken, the daemon would
            // have failed on it (66), not on the flag.
            for by_env in [false, true] {
                let mut cmd = base(sub);
                cmd.args(["--manifest", "no-such-manifest.json"]);
                match by_env {
                    true => cmd.env(var, value),
                    false => cmd.arg(format!("--{flag}")).arg(value),
                };
                let out = run_to_end(cmd.args(["--", "true"]));
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(
                    out.status.code(),
                    Some(64),
                    "{sub} --{flag} {value} (env: {by_env}): {stderr}"
                );
                assert!(
                    stderr.contains(&format!("--{flag}")) && stderr.contains(&range),
                    "{sub} --{flag} {value}: {stderr}"
                );
            }
        }
        if sub == "dev" {
            let out = run_to_end(
                base(sub)
                    .arg(format!("--{flag}"))
                    .arg(max.to_string())
                    .args(["--", "true"]),
            );
            assert_eq!(
                out.status.code(),
                Some(0),
                "dev --{flag} {max}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `--control-max-connections` (the control endpoint's connection limit, the viewer's
/// included) is 256 unless given, and its minimum and maximum are taken, by flag or
/// environment variable: the daemon serves and logs the limit and the platform's reserve.
#[test]
fn the_control_endpoints_connection_limit_is_256_unless_given() {
    let dir = open_tempdir();
    let d = dir.path();
    write(
        &d.join("grexal.json"),
        r#"{"manifest_version": 1, "connections": []}"#,
        0o644,
    );
    write(&d.join("control.token"), "0123456789abcdef0123\n", 0o600);
    // Each case: flags, environment variables, what the log says.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        (&[], &[], "max_connections=256 reserved_for_platform=16"),
        (
            &["--control-max-connections", "32"],
            &[],
            "max_connections=32 reserved_for_platform=16",
        ),
        (
            &[],
            &[("GREXAL_CONTROL_MAX_CONNECTIONS", "65536")],
            "max_connections=65536 reserved_for_platform=16",
        ),
    ];
    for (args, env, logged) in cases {
        let out = run_to_end(
            command()
                .current_dir(d)
                .args(["run", "--sandbox-id", "sbx-1", "--public-key-out"])
                .arg(d.join("sandbox.pub"))
                .args(["--control-listen", "127.0.0.1:0", "--control-token-file"])
                .arg(d.join("control.token"))
                .arg("--socket")
                .arg(d.join("sidecar.sock"))
                .arg("--credentials-dir")
                .arg(d.join("creds"))
                .arg("--env-file")
                .arg(d.join("agent.env"))
                .args(args)
                .envs(env.iter().copied())
                .args(["--", "true"]),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("connection limit") && l.contains(logged)),
            "{args:?} {env:?}: no {logged:?} in {stderr}"
        );
    }
}
