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
