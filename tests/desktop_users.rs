//! The desktop as an unprivileged user (root starts it, its children run as nobody with
//! no supplementary groups, in directories of nobody's own), Chromium's own sandbox on or
//! off, and a profile of another user refused. Real stack, as in `desktop.rs`.

#[path = "support/desktop.rs"]
mod desktop_support;

use std::path::Path;

use desktop_support::*;
use grexal_sidecar::desktop::{
    ChromiumSandbox, Desktop, DesktopConfig, DesktopError, DisplayBackend,
};
use grexal_sidecar::platform::events::EventBus;
use grexal_sidecar::relay::VncTarget;
use tokio_util::sync::CancellationToken;

/// The `Uid:` and `Gid:` lines of /proc/<pid>/status (real, effective, saved, fs) and
/// its `Groups:` line.
fn ids_of(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no {key} in status of {pid}"))
    };
    (line("Uid:"), line("Gid:"), line("Groups:"))
}

async fn check_runs_as_nobody(cfg: DesktopConfig, dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let url = page_server().await;
    let desktop = Desktop::start(cfg.clone(), EventBus::new(), CancellationToken::new())
        .await
        .expect("start as nobody");
    let pids = desktop.pids();
    let want = format!("{NOBODY} {NOBODY} {NOBODY} {NOBODY}");
    for pid in [Some(pids.display), pids.vnc, Some(pids.chromium)]
        .into_iter()
        .flatten()
    {
        let (uid, gid, groups) = ids_of(pid);
        assert_eq!(uid, want, "Uid of {pid}");
        assert_eq!(gid, want, "Gid of {pid}");
        assert_eq!(groups, "", "supplementary groups of {pid}");
    }
    for sub in ["profile", "run", "run/chromium-home", "run/tmp"] {
        let meta = std::fs::metadata(dir.join(sub)).expect("dir");
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "{sub}");
        assert_eq!(meta.mode() & 0o777, 0o700, "{sub}");
    }
    // Its TMPDIR, where its profile lock's socket is.
    let singleton = singleton_dir(&dir.join("profile"));
    assert_eq!(singleton.parent(), Some(dir.join("run/tmp").as_path()));
    assert_eq!(
        std::fs::metadata(&singleton).expect("singleton").uid(),
        NOBODY
    );
    // Chromium wrote its profile as nobody.
    let prefs = std::fs::metadata(dir.join("profile/Default")).expect("profile written");
    assert_eq!(prefs.uid(), NOBODY);

    // The RFB socket (Xvnc's or x11vnc's): the desktop user's alone.
    let VncTarget::Unix(socket) = desktop.vnc_target() else {
        panic!("not a Unix socket: {:?}", desktop.vnc_target())
    };
    let meta = std::fs::metadata(&socket).expect("rfb socket");
    assert_eq!(meta.mode() & 0o777, 0o600, "{}", socket.display());
    assert_eq!(meta.uid(), NOBODY, "{}", socket.display());

    // The daemon (root) reaches the unprivileged VNC server.
    assert!(rfb_banner(&desktop.vnc_target())
        .await
        .starts_with(b"RFB 003."));

    // CDP drives the unprivileged browser.
    check_page_renders(&desktop, url.as_str()).await;
    shutdown_and_check(desktop).await;

    // A second start reuses the dirs nobody now owns, and its profile.
    let desktop = Desktop::start(cfg, EventBus::new(), CancellationToken::new())
        .await
        .expect("restart as nobody");
    assert_eq!(ids_of(desktop.pids().chromium).0, want);
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xvnc_desktop_runs_as_an_unprivileged_user() {
    init_tracing();
    if skip(XVNC_BINARIES) || skip_unless_root() {
        return;
    }
    let dir = traversable_tempdir();
    let mut cfg = config(dir.path());
    cfg.run_as = Some(NOBODY_USER);
    check_runs_as_nobody(cfg, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xvfb_x11vnc_desktop_runs_as_an_unprivileged_user() {
    init_tracing();
    if skip(XVFB_X11VNC_BINARIES) || skip_unless_root() {
        return;
    }
    let dir = traversable_tempdir();
    let mut cfg = xvfb_x11vnc_config(dir.path());
    cfg.run_as = Some(NOBODY_USER);
    check_runs_as_nobody(cfg, dir.path()).await;
}

/// The processes under `root` (itself included), from `/proc/*/stat`'s parent field.
fn process_tree(root: u32) -> Vec<u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(all.iter().filter(|&&p| parent_of(p) == Some(parent)));
        i += 1;
    }
    tree
}

/// A process's arguments. Split at spaces too: Chromium's forked children rewrite their
/// title into one space-separated string.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0 || b == b' ')
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_runs_with_its_sandbox_as_an_unprivileged_user() {
    init_tracing();
    if skip(XVNC_BINARIES) || skip_unless_root() {
        return;
    }
    let url = page_server().await;
    let dir = traversable_tempdir();
    let mut cfg = config(dir.path());
    cfg.run_as = Some(NOBODY_USER);
    // Required, so a missing sandbox fails the start instead of falling back.
    cfg.chromium_sandbox = ChromiumSandbox::On;
    let desktop = Desktop::start(cfg, EventBus::new(), CancellationToken::new())
        .await
        .expect("start with chromium's sandbox");
    // A page renders (in a sandboxed renderer) and CDP reads it.
    check_page_renders(&desktop, url.as_str()).await;
    let browser = desktop.pids().chromium;
    let args = cmdline(browser);
    assert!(!args.is_empty(), "browser {browser} has no command line");
    assert!(
        !args.iter().any(|a| a == "--no-sandbox"),
        "browser runs with --no-sandbox: {args:?}"
    );
    // The namespace sandbox: its renderers live in user namespaces of their own.
    let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let browser_ns = ns(browser).expect("browser's user namespace");
    let renderers: Vec<u32> = process_tree(browser)
        .into_iter()
        .filter(|&p| cmdline(p).iter().any(|a| a == "--type=renderer"))
        .collect();
    assert!(!renderers.is_empty(), "no renderer under {browser}");
    for renderer in &renderers {
        let renderer_ns = ns(*renderer).expect("renderer's user namespace");
        assert_ne!(
            renderer_ns, browser_ns,
            "renderer {renderer} shares the browser's user namespace"
        );
    }
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_mode_as_root() {
    init_tracing();
    if skip(XVNC_BINARIES) || skip_unless_root() {
        return;
    }
    // Required as root: refused before anything is started (the display binary does not
    // exist, so getting further would fail differently).
    let dir = traversable_tempdir();
    let mut cfg = config(dir.path());
    cfg.chromium_sandbox = ChromiumSandbox::On;
    cfg.backend = DisplayBackend::Xvnc {
        xvnc: dir.path().join("no-xvnc"),
    };
    let err = Desktop::start(cfg, EventBus::new(), CancellationToken::new())
        .await
        .expect_err("must refuse");
    assert!(
        matches!(&err, DesktopError::SandboxUnavailable { reason } if reason.contains("root")),
        "{err:?}"
    );
    // Auto as root falls back to --no-sandbox, and the browser starts.
    let mut cfg = config(dir.path());
    cfg.chromium_sandbox = ChromiumSandbox::Auto;
    let desktop = Desktop::start(cfg, EventBus::new(), CancellationToken::new())
        .await
        .expect("auto starts as root");
    let args = cmdline(desktop.pids().chromium);
    assert!(args.iter().any(|a| a == "--no-sandbox"), "{args:?}");
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_empty_profile_of_another_user_is_refused() {
    init_tracing();
    if skip_unless_root() {
        return;
    }
    let dir = traversable_tempdir();
    let mut cfg = config(dir.path());
    cfg.run_as = Some(NOBODY_USER);
    // A profile written by root: its files would stay unwritable for nobody.
    std::fs::create_dir(&cfg.profile_dir).expect("profile");
    std::fs::write(cfg.profile_dir.join("Local State"), b"{}").expect("state");
    // A binary that does not exist: had the refusal not come first, the start would fail
    // with a spawn error instead.
    cfg.chromium = dir.path().join("no-chromium");
    cfg.backend = DisplayBackend::Xvnc {
        xvnc: dir.path().join("no-xvnc"),
    };
    let err = Desktop::start(cfg.clone(), EventBus::new(), CancellationToken::new())
        .await
        .expect_err("must refuse");
    assert!(
        matches!(&err, DesktopError::ForeignDir { dir, owner: 0, user: NOBODY } if *dir == cfg.profile_dir),
        "{err:?}"
    );
    // An empty one (an image may create it ahead of time) is adopted.
    std::fs::remove_file(cfg.profile_dir.join("Local State")).expect("rm");
    let err = Desktop::start(cfg.clone(), EventBus::new(), CancellationToken::new())
        .await
        .expect_err("no xvnc");
    assert!(
        matches!(&err, DesktopError::Spawn { child: "display", program, .. } if program.ends_with("/no-xvnc")),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-xvnc"), "{err}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&cfg.profile_dir).expect("profile");
    assert_eq!(meta.uid(), NOBODY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_at_a_desktop_dir_is_refused_and_what_it_points_to_is_untouched() {
    init_tracing();
    if skip_unless_root() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = traversable_tempdir();
    let mut cfg = config(dir.path());
    cfg.run_as = Some(NOBODY_USER);
    // An empty root-owned directory, 0755: what an empty profile dir may be, so it would be
    // adopted (chowned to nobody, made 0700) were the link followed.
    let target = dir.path().join("not-the-profile");
    std::fs::create_dir(&target).expect("target");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("mode");
    std::os::unix::fs::symlink(&target, &cfg.profile_dir).expect("link");
    cfg.chromium = dir.path().join("no-chromium");
    cfg.backend = DisplayBackend::Xvnc {
        xvnc: dir.path().join("no-xvnc"),
    };
    let err = Desktop::start(cfg.clone(), EventBus::new(), CancellationToken::new())
        .await
        .expect_err("must refuse");
    assert!(
        matches!(&err, DesktopError::Dir { dir, source } if *dir == cfg.profile_dir
            && source.to_string().contains("symlink is not followed")),
        "{err:?}"
    );
    let meta = std::fs::metadata(&target).expect("target");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755));
    assert!(std::fs::symlink_metadata(&cfg.profile_dir)
        .expect("link")
        .file_type()
        .is_symlink());
}
