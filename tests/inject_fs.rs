//! The injector against a real filesystem: permissions and ownership, atomic replacement,
//! failure midway, and a hostile filesystem (planted symlinks and directories, hostile
//! ids and filenames).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use grexal_sidecar::credentials::{Credential, CredentialSet, Source, UploadedFile};
use grexal_sidecar::inject::{InjectError, Injector, Layout, Owner};
use grexal_sidecar::manifest::{AuthMode, Connection, Manifest};
use grexal_sidecar::secret::{secret_bytes, ExposeSecret};
use serde_json::json;

const NOBODY: Owner = Owner {
    uid: 65534,
    gid: 65534,
};

fn is_root() -> bool {
    // The ownership checks run only as root; under CI, where tests run as root, a run
    // that is not root fails here instead of quietly skipping them.
    let root = nix::unistd::geteuid().is_root();
    assert!(
        root || std::env::var_os("CI").is_none(),
        "CI is set but the tests do not run as root: the ownership checks would be skipped"
    );
    root
}

fn manifest() -> Manifest {
    Manifest::parse(
        json!({"connections": [
            {"id": "openai", "display_name": "OpenAI", "auth_mode": "secret_input", "delivery": "env",
             "fields": [{"name": "apiKey", "label": "K", "secret": true},
                        {"name": "org", "label": "O", "secret": false, "env_var": "OPENAI_ORG"}]},
            {"id": "db", "display_name": "DB", "auth_mode": "secret_input", "delivery": "file",
             "fields": [{"name": "user", "label": "U", "secret": false}, {"name": "password", "label": "P", "secret": true}]},
            {"id": "plain", "display_name": "Plain", "auth_mode": "secret_input",
             "fields": [{"name": "token", "label": "T", "secret": true}]},
            {"id": "google", "display_name": "Google", "auth_mode": "oauth_redirect",
             "provider": {"auth_url": "https://a", "token_url": "https://t", "scopes": []}},
            {"id": "ssh_key", "display_name": "SSH", "auth_mode": "file_upload", "max_size_bytes": 1048576},
            {"id": "linkedin", "display_name": "LinkedIn", "auth_mode": "browser_login"}
        ]})
        .to_string()
        .as_bytes(),
    )
    .expect("manifest")
}

fn creds(tag: &str) -> CredentialSet {
    use base64::Engine as _;
    let content = base64::engine::general_purpose::STANDARD.encode(format!("key-{tag}"));
    let doc = json!({"connections": {
        "openai": {"fields": {"apiKey": format!("sk-\"{tag}\"$x"), "org": "org\nline2"}},
        "db": {"fields": {"user": "admin", "password": format!("pw-{tag}")}},
        "plain": {"fields": {"token": format!("tok-{tag}")}},
        "google": {"access_token": format!("ya29-{tag}"), "token_type": "Bearer", "expires_at": 1790000000},
        "ssh_key": {"filename": "id_ed25519", "mime_type": "text/plain", "content_base64": content},
    }});
    CredentialSet::parse(doc.to_string().as_bytes(), &manifest(), Source::Bundle).expect("creds")
}

struct Env {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    env_file: PathBuf,
    /// A directory outside the root that hostile links point at; it must stay empty.
    outside: PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().to_path_buf();
    let outside = base.join("outside");
    fs::create_dir(&outside).expect("outside");
    Env {
        root: base.join("grexal"),
        env_file: base.join("run").join("agent.env"),
        base,
        outside,
        _tmp: tmp,
    }
}

impl Env {
    fn layout(&self, owner: Option<Owner>) -> Layout {
        Layout {
            root: self.root.clone(),
            owner,
            env_file: Some(self.env_file.clone()),
        }
    }
    fn assert_outside_untouched(&self) {
        let entries: Vec<_> = fs::read_dir(&self.outside).expect("outside").collect();
        assert!(
            entries.is_empty(),
            "something was written outside: {entries:?}"
        );
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("stat").permissions().mode() & 0o7777
}

fn unsafe_problem(r: Result<impl std::fmt::Debug, InjectError>) -> String {
    match r {
        Err(InjectError::Unsafe { problem, .. }) => problem,
        other => panic!("expected Unsafe, got {other:?}"),
    }
}

fn unsafe_root_problem(r: Result<Injector, InjectError>) -> String {
    match r {
        Err(InjectError::UnsafeRoot { problem, .. }) => problem,
        other => panic!("expected UnsafeRoot, got {other:?}"),
    }
}

#[test]
fn install_writes_files_bodies_env_with_modes_and_owner() {
    let e = env();
    let owner = is_root().then_some(NOBODY);
    let inj = Injector::new(e.layout(owner)).expect("new");
    let m = inj.install(&manifest(), &creds("a"), 1).expect("install");

    // Files: only file_upload and file-delivered secret_input get a directory.
    let mut dirs: Vec<_> = fs::read_dir(&e.root)
        .expect("root")
        .map(|d| d.expect("entry").file_name())
        .collect();
    dirs.sort();
    assert_eq!(dirs, vec!["db", "ssh_key"]);
    assert_eq!(
        fs::read(e.root.join("ssh_key/id_ed25519")).expect("file"),
        b"key-a"
    );
    assert_eq!(fs::read(e.root.join("db/password")).expect("file"), b"pw-a");
    assert_eq!(fs::read(e.root.join("db/user")).expect("file"), b"admin");
    for (p, want) in [
        (e.root.clone(), 0o700),
        (e.root.join("db"), 0o700),
        (e.root.join("ssh_key"), 0o700),
        (e.root.join("db/password"), 0o600),
        (e.root.join("ssh_key/id_ed25519"), 0o600),
        (e.env_file.clone(), 0o600),
    ] {
        assert_eq!(mode(&p), want, "{}", p.display());
        if let Some(o) = owner {
            let md = fs::symlink_metadata(&p).expect("stat");
            assert_eq!((md.uid(), md.gid()), (o.uid, o.gid), "{}", p.display());
        }
    }
    // The env file's directory is shared with the agent socket (/run/grexal by default):
    // the agent traverses it but does not own it.
    let env_dir = e.env_file.parent().expect("parent").to_path_buf();
    assert_eq!(mode(&env_dir), 0o755, "{}", env_dir.display());
    assert_eq!(
        fs::symlink_metadata(&env_dir).expect("stat").uid(),
        nix::unistd::geteuid().as_raw()
    );

    // Bodies.
    let body = |id: &str| -> serde_json::Value {
        serde_json::from_slice(m.bodies[id].expose_secret()).expect("json")
    };
    assert_eq!(
        body("openai"),
        json!({"apiKey": "sk-\"a\"$x", "org": "org\nline2"})
    );
    assert_eq!(body("db"), json!({"user": "admin", "password": "pw-a"}));
    assert_eq!(body("plain"), json!({"token": "tok-a"}));
    assert_eq!(
        body("google"),
        json!({"access_token": "ya29-a", "token_type": "Bearer", "expires_at": 1790000000, "scope": null})
    );
    let path = format!("{}/ssh_key/id_ed25519", e.root.display());
    assert_eq!(
        body("ssh_key"),
        json!({"file_path": path, "filename": "id_ed25519", "size": 5, "mime_type": "text/plain"})
    );
    assert!(!m.bodies.contains_key("linkedin"));
    assert_eq!(m.version, 1);

    // Env vars, in manifest order, and the env file.
    let env: Vec<_> = m
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    assert_eq!(
        env,
        vec![
            ("OPENAI_API_KEY", "sk-\"a\"$x"),
            ("OPENAI_ORG", "org\nline2")
        ]
    );
    let text = fs::read_to_string(&e.env_file).expect("env file");
    assert!(
        text.contains("OPENAI_API_KEY=\"sk-\\\"a\\\"\\$x\"\n"),
        "{text}"
    );
    assert!(text.contains("OPENAI_ORG=\"org\nline2\"\n"), "{text}");

    // Wipe removes all of it, including the directories the injector created.
    inj.wipe().expect("wipe");
    assert!(!e.root.exists());
    assert!(!e.env_file.exists());
    assert!(!e.env_file.parent().expect("parent").exists());
}

#[test]
fn newer_version_replaces_and_withdraws() {
    let e = env();
    let inj = Injector::new(e.layout(None)).expect("new");
    inj.install(&manifest(), &creds("a"), 1).expect("v1");
    let ino_before = fs::metadata(e.root.join("ssh_key")).expect("dir").ino();
    inj.install(&manifest(), &creds("b"), 2).expect("v2");
    assert_eq!(
        fs::read(e.root.join("ssh_key/id_ed25519")).expect("file"),
        b"key-b"
    );
    assert_ne!(
        fs::metadata(e.root.join("ssh_key")).expect("dir").ino(),
        ino_before,
        "a new directory"
    );
    assert!(fs::read_to_string(&e.env_file)
        .expect("env")
        .contains("sk-\\\"b\\\""));

    // v3 drops the file connections: their directories go; no temporaries remain.
    let mut fewer = creds("c");
    fewer.connections.remove("ssh_key");
    fewer.connections.remove("db");
    inj.install(&manifest(), &fewer, 3).expect("v3");
    let left: Vec<_> = fs::read_dir(&e.root).expect("root").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_restart_after_an_unclean_exit_removes_withdrawn_connection_directories() {
    let e = env();
    {
        let inj = Injector::new(e.layout(None)).expect("new");
        inj.install(&manifest(), &creds("a"), 1).expect("v1");
        // Killed here: no wipe.
    }
    assert!(e.root.join("db/password").exists() && e.root.join("ssh_key/id_ed25519").exists());
    // A leftover for a declared connection that had no directory in v1 (an older run), and
    // entries that are not ours to remove: undeclared names, a symlink and a file at
    // declared connections' names.
    fs::create_dir(e.root.join("plain")).expect("leftover dir");
    fs::write(e.root.join("plain/token"), b"tok-old").expect("leftover file");
    fs::create_dir(e.root.join("foreign")).expect("foreign dir");
    fs::write(e.root.join("foreign/keep"), b"keep").expect("foreign file");
    fs::write(e.root.join("notes.txt"), b"keep").expect("foreign file");
    fs::write(e.outside.join("keep"), b"keep").expect("outside file");
    symlink(&e.outside, e.root.join("google")).expect("link at a declared name");
    fs::write(e.root.join("linkedin"), b"keep").expect("file at a declared name");

    // The new process installs v2 without the file connections.
    let inj = Injector::new(e.layout(None)).expect("new after the restart");
    let mut fewer = creds("b");
    fewer.connections.remove("ssh_key");
    fewer.connections.remove("db");
    let m = inj.install(&manifest(), &fewer, 2).expect("v2");
    assert!(!m.bodies.contains_key("db") && !m.bodies.contains_key("ssh_key"));
    for gone in ["db", "ssh_key", "plain"] {
        assert!(
            fs::symlink_metadata(e.root.join(gone)).is_err(),
            "{gone} survived the install: {:?}",
            tree(&e.root)
        );
    }
    assert_eq!(
        fs::read(e.root.join("foreign/keep")).expect("kept"),
        b"keep"
    );
    assert_eq!(fs::read(e.root.join("notes.txt")).expect("kept"), b"keep");
    assert_eq!(fs::read(e.root.join("linkedin")).expect("kept"), b"keep");
    assert!(fs::symlink_metadata(e.root.join("google"))
        .expect("link kept")
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(e.outside.join("keep")).expect("outside"), b"keep");
    inj.wipe().expect("wipe");
    assert_eq!(
        tree(&e.root),
        ["foreign", "foreign/keep", "google", "linkedin", "notes.txt"].map(PathBuf::from),
    );
}

#[test]
fn a_restart_after_an_unclean_exit_replaces_and_wipes_the_previous_directories() {
    let e = env();
    {
        let inj = Injector::new(e.layout(None)).expect("new");
        inj.install(&manifest(), &creds("a"), 1).expect("v1");
    }
    let inj = Injector::new(e.layout(None)).expect("new after the restart");
    inj.install(&manifest(), &creds("b"), 2).expect("v2");
    assert_eq!(
        fs::read(e.root.join("ssh_key/id_ed25519")).expect("file"),
        b"key-b"
    );
    assert_eq!(fs::read(e.root.join("db/password")).expect("file"), b"pw-b");
    inj.wipe().expect("wipe");
    assert!(
        !e.root.exists() || tree(&e.root).is_empty(),
        "{:?}",
        tree(&e.root)
    );
}

#[test]
fn concurrent_reader_never_sees_partial_or_missing_file() {
    let e = env();
    let inj = Injector::new(e.layout(None)).expect("new");
    let m = Manifest::parse(
        br#"{"connections": [{"id": "f", "display_name": "F", "auth_mode": "file_upload", "max_size_bytes": 1048576}]}"#,
    )
    .expect("manifest");
    const SIZE: usize = 256 * 1024;
    let set = |v: u64| {
        let byte = b'a' + (v % 26) as u8;
        CredentialSet {
            connections: BTreeMap::from([(
                "f".to_owned(),
                Credential::File(UploadedFile {
                    filename: "data.bin".into(),
                    mime_type: "application/octet-stream".into(),
                    content: secret_bytes(vec![byte; SIZE]),
                }),
            )]),
        }
    };
    inj.install(&m, &set(0), 0).expect("v0");
    let path = e.root.join("f/data.bin");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let data =
                    fs::read(&path).unwrap_or_else(|err| panic!("read {reads} failed: {err}"));
                assert_eq!(data.len(), SIZE, "partial file at read {reads}");
                assert!(
                    data.iter().all(|&b| b == data[0]),
                    "mixed file at read {reads}"
                );
                reads += 1;
            }
            reads
        })
    };
    for v in 1..=150 {
        inj.install(&m, &set(v), v).expect("install");
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader");
    assert!(reads > 0);
    assert_eq!(fs::read(&path).expect("final")[0], b'a' + (150 % 26) as u8);
}

#[test]
fn failure_midway_keeps_the_old_version() {
    let e = env();
    let inj = Injector::new(e.layout(None)).expect("new");
    inj.install(&manifest(), &creds("a"), 1).expect("v1");

    // 1. The second directory ("ssh_key") handed to another uid (only root can) fails
    //    phase 1 after the first ("db") was built: refused as Foreign, naming it.
    if is_root() {
        std::os::unix::fs::chown(e.root.join("ssh_key"), Some(12345), Some(12345)).expect("chown");
        match inj.install(&manifest(), &creds("b"), 2) {
            Err(err @ InjectError::Foreign { .. }) => {
                let text = err.to_string();
                assert!(
                    text.contains("connection ssh_key:")
                        && text.contains(&format!(
                            "{}/ssh_key/ belongs to uid 12345",
                            e.root.display()
                        )),
                    "{text}"
                );
            }
            other => panic!("expected Foreign, got {other:?}"),
        }
        assert_eq!(fs::read(e.root.join("db/password")).expect("old"), b"pw-a");
        assert_eq!(
            fs::read(e.root.join("ssh_key/id_ed25519")).expect("old"),
            b"key-a"
        );
        assert_eq!(
            fs::metadata(e.root.join("ssh_key")).expect("kept").uid(),
            12345,
            "left as it is"
        );
        assert_eq!(
            tree(&e.root),
            [
                "db",
                "db/password",
                "db/user",
                "ssh_key",
                "ssh_key/id_ed25519"
            ]
            .map(PathBuf::from),
            "the built directory was removed"
        );
        assert!(fs::read_to_string(&e.env_file)
            .expect("env")
            .contains("sk-\\\"a\\\""));
        std::os::unix::fs::chown(e.root.join("ssh_key"), Some(0), Some(0)).expect("chown back");
    }

    // 2. The env file's temporary name holds a tree too deep to clear: the write of the
    //    env file fails after every directory was built.
    let temp = e.env_file.with_file_name(".agent.env.tmp");
    let mut deep = temp.clone();
    for _ in 0..12 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).expect("deep");
    match inj.install(&manifest(), &creds("c"), 3) {
        Err(InjectError::EnvFile { .. }) => {}
        other => panic!("expected EnvFile, got {other:?}"),
    }
    assert_eq!(fs::read(e.root.join("db/password")).expect("old"), b"pw-a");
    assert_eq!(
        fs::read(e.root.join("ssh_key/id_ed25519")).expect("old"),
        b"key-a"
    );
    let names: Vec<_> = fs::read_dir(&e.root)
        .expect("root")
        .map(|d| d.expect("e").file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporaries left: {names:?}");
    assert!(fs::read_to_string(&e.env_file)
        .expect("env")
        .contains("sk-\\\"a\\\""));
    fs::remove_dir_all(&temp).expect("clean");
    inj.install(&manifest(), &creds("d"), 4).expect("recovers");
    assert_eq!(fs::read(e.root.join("db/password")).expect("new"), b"pw-d");
    e.assert_outside_untouched();
}

#[test]
fn hostile_roots_are_refused() {
    // A symlink at the root.
    let e = env();
    symlink(&e.outside, &e.root).expect("plant");
    assert!(unsafe_root_problem(Injector::new(e.layout(None))).contains("symlink"));
    e.assert_outside_untouched();

    // A regular file at the root.
    let e = env();
    fs::write(&e.root, b"x").expect("plant");
    assert!(unsafe_root_problem(Injector::new(e.layout(None))).contains("not a directory"));

    // A world-writable directory, and a group-writable one.
    for m in [0o777, 0o1777, 0o770] {
        let e = env();
        fs::create_dir(&e.root).expect("plant");
        fs::set_permissions(&e.root, fs::Permissions::from_mode(m)).expect("chmod");
        assert!(unsafe_root_problem(Injector::new(e.layout(None)))
            .contains("writable by group or others"));
    }

    // A directory owned by someone else.
    if is_root() {
        let e = env();
        fs::create_dir(&e.root).expect("plant");
        std::os::unix::fs::chown(&e.root, Some(12345), Some(12345)).expect("chown");
        assert!(unsafe_root_problem(Injector::new(e.layout(Some(NOBODY))))
            .contains("owned by uid 12345"));
        // ... but the configured owner's is accepted.
        std::os::unix::fs::chown(&e.root, Some(NOBODY.uid), Some(NOBODY.gid)).expect("chown");
        Injector::new(e.layout(Some(NOBODY))).expect("owner's root");
    }

    // A symlink at the env file's directory.
    let e = env();
    symlink(&e.outside, e.env_file.parent().expect("parent")).expect("plant");
    assert!(unsafe_root_problem(Injector::new(e.layout(None))).contains("symlink"));

    // A relative root.
    let mut layout = env().layout(None);
    layout.root = PathBuf::from("grexal");
    assert!(unsafe_root_problem(Injector::new(layout)).contains("absolute"));
}

/// With an agent user, an existing root the agent cannot enter is refused, naming the uid,
/// owner and mode, and left as it is (it was accepted, and every file the agent was told
/// of failed with EACCES); one it can enter, as owner, primary group or other, is used,
/// and the agent reads its file through it.
#[test]
fn an_existing_root_the_agent_cannot_enter_is_refused() {
    use std::os::unix::process::CommandExt;
    if !is_root() {
        return;
    }
    let refused = [
        (0, 0, 0o700),
        (0, 0, 0o750),
        (NOBODY.uid, NOBODY.gid, 0o600),
    ];
    for (uid, gid, m) in refused {
        let e = env();
        fs::create_dir(&e.root).expect("plant");
        std::os::unix::fs::chown(&e.root, Some(uid), Some(gid)).expect("chown");
        fs::set_permissions(&e.root, fs::Permissions::from_mode(m)).expect("chmod");
        let problem = unsafe_root_problem(Injector::new(e.layout(Some(NOBODY))));
        assert!(
            problem.contains("cannot be entered by the agent's user (uid 65534, gid 65534)")
                && problem.contains(&format!("owned by uid {uid} gid {gid} with mode {m:o}")),
            "{uid}:{gid} {m:o}: {problem}"
        );
        let meta = fs::metadata(&e.root).expect("root");
        assert_eq!(
            (meta.uid(), meta.mode() & 0o7777),
            (uid, m),
            "left as it is"
        );
    }

    let accepted = [
        (0, 0, 0o711),
        (0, NOBODY.gid, 0o750),
        (NOBODY.uid, NOBODY.gid, 0o700),
    ];
    for (uid, gid, m) in accepted {
        let e = env();
        // The temp dir above the root is 0700 root's: let the agent through it.
        fs::set_permissions(&e.base, fs::Permissions::from_mode(0o711)).expect("chmod");
        fs::create_dir(&e.root).expect("plant");
        std::os::unix::fs::chown(&e.root, Some(uid), Some(gid)).expect("chown");
        fs::set_permissions(&e.root, fs::Permissions::from_mode(m)).expect("chmod");
        let inj = Injector::new(e.layout(Some(NOBODY)))
            .unwrap_or_else(|err| panic!("{uid}:{gid} {m:o}: {err}"));
        inj.install(&manifest(), &creds("a"), 1).expect("install");
        // Read as the agent would: its uid and gid, no supplementary groups of ours.
        let out = std::process::Command::new("cat")
            .arg(e.root.join("db/password"))
            .uid(NOBODY.uid)
            .gid(NOBODY.gid)
            .output()
            .expect("cat");
        assert!(
            out.status.success(),
            "{uid}:{gid} {m:o}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"pw-a");
    }
}

/// Runs `program args` as the agent's user (as ourselves when the tests do not run as
/// root), and insists it succeeds.
fn as_agent(e: &Env, program: &str, args: &[&std::ffi::OsStr]) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    if is_root() {
        // The temp dir above the root is 0700 root's: let the agent through it.
        fs::set_permissions(&e.base, fs::Permissions::from_mode(0o711)).expect("chmod");
        cmd.uid(NOBODY.uid).gid(NOBODY.gid);
    }
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the agent may do to its own connection directories between two installs — plant
/// symlinks (one at a name the next version writes, one to a file outside), a
/// subdirectory, a FIFO, open the directory to group and others, or put a symlink in the
/// directory's place — does not stop the next install (it stopped every later one, the
/// refresh of any connection, with an Unsafe error the platform saw as `internal`). Each
/// directory is replaced whole, nothing is written or removed through a link, and nothing
/// the agent planted is left.
#[test]
fn entries_the_agent_planted_do_not_block_the_next_install() {
    let e = env();
    let owner = is_root().then_some(NOBODY);
    let inj = Injector::new(e.layout(owner)).expect("new");
    inj.install(&manifest(), &creds("a"), 1).expect("v1");
    fs::write(e.outside.join("keep"), b"keep").expect("outside file");

    let (db, ssh_key) = (e.root.join("db"), e.root.join("ssh_key"));
    let os = |p: &Path| p.as_os_str().to_owned();
    let ln_s = |target: &Path, link: &Path| {
        as_agent(&e, "ln", &["-s".as_ref(), &os(target), &os(link)]);
    };
    ln_s(&e.outside.join("keep"), &db.join("evil"));
    as_agent(&e, "rm", &[&os(&db.join("password"))]);
    ln_s(&e.outside.join("stolen"), &db.join("password"));
    as_agent(&e, "mkdir", &[&os(&db.join("sub"))]);
    ln_s(Path::new("/"), &db.join("sub/root"));
    as_agent(&e, "mkfifo", &[&os(&db.join("fifo"))]);
    as_agent(&e, "chmod", &["g+w,o+w".as_ref(), &os(&db)]);
    as_agent(&e, "rm", &["-r".as_ref(), &os(&ssh_key)]);
    ln_s(&e.outside, &ssh_key);
    if let Some(o) = owner {
        let link = fs::symlink_metadata(db.join("evil")).expect("planted");
        assert_eq!(link.uid(), o.uid, "planted by the agent's user");
    }

    let m = inj
        .install(&manifest(), &creds("b"), 2)
        .expect("an install over what the agent planted");
    assert_eq!(m.version, 2);
    assert_eq!(
        tree(&e.root),
        [
            "db",
            "db/password",
            "db/user",
            "ssh_key",
            "ssh_key/id_ed25519"
        ]
        .map(PathBuf::from),
        "everything planted is gone"
    );
    assert_eq!(fs::read(db.join("password")).expect("file"), b"pw-b");
    assert_eq!(fs::read(db.join("user")).expect("file"), b"admin");
    assert_eq!(
        fs::read(ssh_key.join("id_ed25519")).expect("file"),
        b"key-b"
    );
    for (p, want) in [
        (db.clone(), 0o700),
        (ssh_key.clone(), 0o700),
        (db.join("password"), 0o600),
        (ssh_key.join("id_ed25519"), 0o600),
    ] {
        assert_eq!(mode(&p), want, "{}", p.display());
        let md = fs::symlink_metadata(&p).expect("stat");
        assert!(!md.file_type().is_symlink(), "{}", p.display());
        if let Some(o) = owner {
            assert_eq!((md.uid(), md.gid()), (o.uid, o.gid), "{}", p.display());
        }
    }
    // The links' targets: the file outside untouched, nothing written where the link at
    // a name the install writes pointed.
    assert_eq!(fs::read(e.outside.join("keep")).expect("outside"), b"keep");
    assert_eq!(tree(&e.outside), [PathBuf::from("keep")]);
    inj.wipe().expect("wipe");
    assert!(!e.root.exists(), "{:?}", tree(&e.root));
    assert_eq!(fs::read(e.outside.join("keep")).expect("outside"), b"keep");
}

/// The name of an entry the agent planted is logged in its Debug form: a newline in it
/// does not start a line of the daemon's log (the planted name ends in what looks like
/// a line of ours).
#[test]
fn a_planted_name_cannot_forge_a_line_of_the_log() {
    use grexal_sidecar::cli::LogFormat;

    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const FORGED: &str = "1999-12-31T23:59:59.000000Z  INFO grexal_sidecar::daemon: FORGED LINE";
    let e = env();
    let inj = Injector::new(e.layout(None)).expect("new");
    inj.install(&manifest(), &creds("a"), 1).expect("v1");
    symlink(
        &e.outside,
        e.root.join("db").join(format!("evil\n{FORGED}\r{FORGED}")),
    )
    .expect("plant");

    let out = Captured::default();
    let writer = out.clone();
    let subscriber =
        grexal_sidecar::telemetry::subscriber(LogFormat::Text, "info", move || writer.clone())
            .expect("subscriber");
    tracing::subscriber::with_default(subscriber, || {
        inj.install(&manifest(), &creds("b"), 2).expect("v2");
    });
    let log = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
    let lines: Vec<&str> = log.split(['\n', '\r']).collect();
    let with_name: Vec<&&str> = lines.iter().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(with_name.len(), 1, "{log}");
    assert!(
        with_name[0].contains("WARN")
            && with_name[0].contains("replacing a connection directory")
            && with_name[0].contains("connection=\"db\"")
            && with_name[0].contains(&format!("example=\"evil\\n{FORGED}\\r{FORGED}\"")),
        "{log}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("1999-12-31")), "{log}");
    e.assert_outside_untouched();
}

/// What an install leaves alone: an entry of another uid at a connection's name (only
/// root could put it there) is refused as Foreign and left as it is, with nothing
/// installed; an entry at a temporary name (the name a daemon before the random nonce
/// would have used, planted in advance) does not stop an install and is not followed.
#[test]
fn foreign_entries_are_refused_and_planted_temporary_names_do_not_matter() {
    if is_root() {
        let e = env();
        let inj = Injector::new(e.layout(Some(NOBODY))).expect("new");
        fs::create_dir(e.root.join("db")).expect("dir");
        fs::write(e.root.join("db/keep"), b"keep").expect("file");
        std::os::unix::fs::chown(e.root.join("db"), Some(12345), Some(12345)).expect("chown");
        match inj.install(&manifest(), &creds("a"), 1) {
            Err(InjectError::Foreign {
                connection, uid, ..
            }) => assert_eq!((connection.as_str(), uid), ("db", 12345)),
            other => panic!("expected Foreign, got {other:?}"),
        }
        assert_eq!(tree(&e.root), ["db", "db/keep"].map(PathBuf::from));
        assert!(!e.env_file.exists(), "nothing installed");
    }

    let e = env();
    let inj = Injector::new(e.layout(None)).expect("new");
    symlink(&e.outside, e.root.join(".db.v7.tmp")).expect("plant");
    symlink(&e.outside, e.root.join(".ssh_key.v7.tmp")).expect("plant");
    inj.install(&manifest(), &creds("a"), 7).expect("install");
    assert_eq!(fs::read(e.root.join("db/password")).expect("file"), b"pw-a");
    assert_eq!(
        fs::read(e.root.join("ssh_key/id_ed25519")).expect("file"),
        b"key-a"
    );
    e.assert_outside_untouched();
    for planted in [".db.v7.tmp", ".ssh_key.v7.tmp"] {
        assert!(fs::symlink_metadata(e.root.join(planted))
            .expect("left")
            .file_type()
            .is_symlink());
    }
}

#[test]
fn startup_removes_stale_temporaries_without_following_links() {
    let e = env();
    fs::create_dir_all(e.root.join(".db.v3.tmp")).expect("stale");
    fs::write(e.root.join(".db.v3.tmp/password"), b"old").expect("stale file");
    fs::set_permissions(&e.root, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(e.outside.join("keep"), b"keep").expect("keep");
    symlink(&e.outside, e.root.join(".ssh_key.v9.tmp")).expect("planted link");
    fs::write(e.root.join("unrelated"), b"u").expect("unrelated");
    Injector::new(e.layout(None)).expect("new");
    assert!(!e.root.join(".db.v3.tmp").exists());
    assert!(
        fs::symlink_metadata(e.root.join(".ssh_key.v9.tmp")).is_err(),
        "link removed"
    );
    assert_eq!(
        fs::read(e.outside.join("keep")).expect("kept"),
        b"keep",
        "link not followed"
    );
    assert!(
        e.root.join("unrelated").exists(),
        "only our temporary names are touched"
    );
}

fn upload_manifest(id: &str) -> Manifest {
    Manifest {
        connections: vec![Connection {
            id: id.to_owned(),
            display_name: "F".into(),
            mode: AuthMode::FileUpload {
                accepted_extensions: vec![],
                max_size_bytes: 1024,
                description: None,
            },
        }],
        sandbox_template: None,
    }
}

fn upload_set(id: &str, filename: &str) -> CredentialSet {
    CredentialSet {
        connections: BTreeMap::from([(
            id.to_owned(),
            Credential::File(UploadedFile {
                filename: filename.to_owned(),
                mime_type: "text/plain".into(),
                content: secret_bytes(b"data".to_vec()),
            }),
        )]),
    }
}

/// Every entry under `dir`, recursively, as paths relative to it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read_dir") {
            let p = entry.expect("entry").path();
            out.push(p.strip_prefix(dir).expect("prefix").to_path_buf());
            if fs::symlink_metadata(&p).expect("stat").is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_ids_and_filenames_are_refused() {
    let long = "a".repeat(4096);
    let hostile = [
        "..",
        ".",
        "/",
        "a/b",
        "../x",
        "a\0b",
        long.as_str(),
        "\u{202e}gpj.exe",
        "a\u{ff0f}b",
        "",
    ];
    for bad in hostile {
        let e = env();
        let inj = Injector::new(e.layout(None)).expect("new");
        let before = tree(&e.base);
        let problem =
            unsafe_problem(inj.install(&upload_manifest(bad), &upload_set(bad, "f.txt"), 1));
        assert!(
            problem.contains("not a safe path component"),
            "id {bad:?}: {problem}"
        );
        let problem =
            unsafe_problem(inj.install(&upload_manifest("ok"), &upload_set("ok", bad), 1));
        assert!(
            problem.contains("uploaded filename"),
            "filename {bad:?}: {problem}"
        );
        assert_eq!(tree(&e.base), before, "{bad:?} wrote something");
    }
}

#[test]
fn mismatched_or_undeclared_credentials_are_refused() {
    let e = env();
    let inj = Injector::new(e.layout(None)).expect("new");
    assert!(
        unsafe_problem(inj.install(&upload_manifest("a"), &upload_set("b", "f"), 1))
            .contains("not declared")
    );
    let mut set = upload_set("google", "f");
    let m = manifest();
    let moved = set.connections.remove("google").expect("moved");
    set.connections.insert("plain".into(), moved);
    assert!(
        unsafe_problem(inj.install(&m, &set, 1)).contains("does not match auth_mode secret_input")
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever the filename, nothing is written anywhere but `{root}/{id}/{filename}`.
    #[test]
    fn arbitrary_filenames_stay_inside(name in "\\PC{0,12}|[./\\\\\u{0}\u{202e}\u{ff0f}a]{0,8}|\\.\\.(/\\.\\.){0,4}") {
        let e = env();
        let inj = Injector::new(Layout { env_file: None, ..e.layout(None) }).expect("new");
        let before = tree(&e.base);
        let result = inj.install(&upload_manifest("c"), &upload_set("c", &name), 1);
        let after = tree(&e.base);
        let added: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
        match result {
            Ok(_) => {
                let want_dir = PathBuf::from("grexal/c");
                let want_file = want_dir.join(&name);
                proptest::prop_assert_eq!(added, vec![&want_dir, &want_file]);
                proptest::prop_assert_eq!(want_file.parent(), Some(want_dir.as_path()));
            }
            Err(_) => proptest::prop_assert!(added.is_empty(), "{:?}", added),
        }
    }
}
