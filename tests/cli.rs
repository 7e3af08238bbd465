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
    let missing = dir.path().join("no-manifest.json");
    for value in ["1", "0", "yes", "no", "on", "off", "true", "false"] {
        // Parsed, so the daemon gets as far as the manifest (66 when it is missing).
        let out = run_to_end(
            command()
                .env("GREXAL_DESKTOP", value)
                .arg("dev")
                .arg("--manifest")
                .arg(&missing),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no-manifest.json"),
            "GREXAL_DESKTOP={value}: {stderr}"
        );
        assert_ne!(out.status.code(), Some(64), "GREXAL_DESKTOP={value}");
    }
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
