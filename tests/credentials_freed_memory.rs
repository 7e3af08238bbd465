//! No plaintext credential is left in freed heap memory by opening a bundle and parsing its
//! document, or by reading and parsing `dev`'s `.grexal/connections.json`, whether values
//! are written plainly or with JSON escapes (a quote, a backslash, `\/`, a newline, or any
//! non-ASCII character as `json.dumps` writes it by default: `\u00e9`), nor by reading the
//! file a `"path"` entry names (under `dev`, or embedding it for `seal`), nor by starting the
//! agent with an env-delivered field in its environment.
//!
//! A test binary of its own: it installs a global allocator that, while armed, scans every
//! block freed (or left behind by a reallocation) for the canaries. A secret one test leaves
//! in freed memory may be handed, unwritten, to an allocation of the next and found when
//! that is freed: after a failure, run the failing tests one at a time (`--exact`) to see
//! which of them leaves it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use base64::Engine as _;
use grexal_sidecar::bundle::{self, Opener, SealRequest};
use grexal_sidecar::credentials::{embed_paths, read_document, Credential, CredentialSet, Source};
use grexal_sidecar::keys::{PlatformSigningKey, SandboxSecretKey};
use grexal_sidecar::manifest::Manifest;
use grexal_sidecar::secret::ExposeSecret;

/// In every secret value of the documents below (decoded), and nowhere else.
const CANARY: &[u8] = b"CNRY-Q7x";
/// A file's content: it holds the canary once decoded, and its base64 text holds
/// `B64_CANARY` (a secret too, until decoded).
const FILE_CONTENT: &[u8] = b"CNRY-Q7x file content, long enough for a base64 canary";

static ARMED: AtomicBool = AtomicBool::new(false);
static HITS: AtomicUsize = AtomicUsize::new(0);
/// The needles scanned for while armed: `CANARY` and the first bytes of the file's base64.
static NEEDLES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Tests arm the allocator one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Scan;

/// # Safety
/// `p..p + n` must be readable.
unsafe fn scan(p: *const u8, n: usize) {
    // SAFETY: the caller passes a block it owns, about to be freed.
    let block = unsafe { std::slice::from_raw_parts(p, n) };
    // `try_lock`: the lock is never held while allocating (the needles are set up unarmed).
    if let Ok(needles) = NEEDLES.try_lock() {
        for needle in needles.iter() {
            if block.windows(needle.len()).any(|w| w == needle.as_slice()) {
                HITS.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

// SAFETY: delegates to `System`; reallocation is alloc + copy + dealloc, so the old block
// goes through `dealloc` (and its scan) like any freed block.
unsafe impl GlobalAlloc for Scan {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::SeqCst) {
            unsafe { scan(p, layout.size()) };
        }
        unsafe { System.dealloc(p, layout) }
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let fresh = unsafe { self.alloc(Layout::from_size_align_unchecked(new, layout.align())) };
        if !fresh.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(p, fresh, layout.size().min(new));
                self.dealloc(p, layout);
            }
        }
        fresh
    }
}

#[global_allocator]
static ALLOCATOR: Scan = Scan;

/// Runs `f` armed; returns how many freed blocks held a needle.
fn freed_blocks_with_canaries(f: impl FnOnce()) -> usize {
    /// Disarms even when `f` panics, so a failed test does not leave the allocator scanning
    /// the blocks that the harness and the next test free.
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            ARMED.store(false, Ordering::SeqCst);
        }
    }
    HITS.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let disarm = Disarm;
    f();
    drop(disarm);
    HITS.load(Ordering::SeqCst)
}

fn manifest() -> Manifest {
    Manifest::parse(
        br#"{"connections": [
            {"id": "openai", "display_name": "O", "auth_mode": "secret_input", "delivery": "env",
             "fields": [{"name": "api_key", "label": "K", "secret": true},
                        {"name": "org", "label": "Org", "secret": true}]},
            {"id": "github", "display_name": "G", "auth_mode": "oauth_redirect",
             "provider": {"auth_url": "https://a", "token_url": "https://t", "scopes": []}},
            {"id": "deploy_key", "display_name": "D", "auth_mode": "file_upload",
             "max_size_bytes": 65536}
        ]}"#,
    )
    .expect("manifest")
}

/// The document with `value` (a JSON string literal holding the canary) as every secret
/// string, and the file's base64 as `content_base64` (its first character escaped when
/// `escaped`, as `\u0051`).
fn document(value: &str, escaped: bool) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(FILE_CONTENT);
    let b64 = if escaped {
        format!("\\u{:04x}{}", b64.as_bytes()[0], &b64[1..])
    } else {
        b64
    };
    format!(
        r#"{{"connections": {{
            "openai": {{"fields": {{"api_key": {value}, "org": {value}}}}},
            "github": {{"access_token": {value}, "token_type": "bearer"}},
            "deploy_key": {{"filename": "k.pem", "content_base64": "{b64}"}}
        }}}}"#
    )
}

/// Secret values as a platform or a developer may write them.
const VALUES: &[(&str, bool)] = &[
    (r#""CNRY-Q7x-plain-value""#, false),
    (r#""CNRY-Q7x-caf\u00e9""#, true),
    (r#""CNRY-Q7x-\"quoted\"""#, true),
    (r#""CNRY-Q7x-back\\slash""#, true),
    (r#""CNRY-Q7x-sl\/ash""#, true),
    (r#""CNRY-Q7x-line\nbreak""#, true),
    (r#""CNRY-Q7x-\ud83d\ude00""#, true),
    (r#""\u0043NRY-Q7x-escaped-inside""#, true),
];

fn set_needles() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(FILE_CONTENT);
    *NEEDLES.lock().unwrap() = vec![CANARY.to_vec(), b64.as_bytes()[..16].to_vec()];
}

/// The parsed set really holds the canaries (the test is not vacuous).
fn check_set(set: &CredentialSet) {
    let Some(Credential::Secret { fields }) = set.connections.get("openai") else {
        panic!("openai")
    };
    assert!(fields["api_key"].expose_secret().contains("CNRY-Q7x"));
    let Some(Credential::OAuth(token)) = set.connections.get("github") else {
        panic!("github")
    };
    assert!(token.access_token.expose_secret().contains("CNRY-Q7x"));
    let Some(Credential::File(file)) = set.connections.get("deploy_key") else {
        panic!("deploy_key")
    };
    assert_eq!(file.content.expose_secret(), FILE_CONTENT);
}

#[test]
fn opening_a_bundle_and_parsing_it_leaves_no_secret_in_freed_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    set_needles();
    let manifest = manifest();
    let sandbox = SandboxSecretKey::generate();
    let platform = PlatformSigningKey::generate();
    let opener = Opener {
        sandbox_id: "sbx".into(),
        sandbox_key: sandbox,
        trusted: vec![platform.public_key()],
    };
    for &(value, escaped) in VALUES {
        let mut plaintext = document(value, escaped).into_bytes();
        let sealed = bundle::seal(&SealRequest {
            sandbox_id: "sbx",
            version: 1,
            issued_at: 0,
            expires_at: u64::MAX,
            recipient: &opener.sandbox_key.public_key(),
            signer: &platform,
            plaintext: &plaintext,
        })
        .expect("seal");
        zeroize::Zeroize::zeroize(&mut plaintext);
        drop(plaintext);
        let hits = freed_blocks_with_canaries(|| {
            let opened = opener.open(&sealed, 1, None).expect("open");
            let set =
                CredentialSet::parse(opened.plaintext.expose_secret(), &manifest, Source::Bundle)
                    .expect("parse");
            check_set(&set);
        });
        assert_eq!(hits, 0, "{value}: freed blocks held a secret");
    }
}

#[test]
fn reading_and_parsing_dev_connections_leaves_no_secret_in_freed_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    set_needles();
    let manifest = manifest();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("connections.json");
    for &(value, escaped) in VALUES {
        let mut text = document(value, escaped).into_bytes();
        std::fs::write(&path, &text).expect("write");
        zeroize::Zeroize::zeroize(&mut text);
        drop(text);
        let hits = freed_blocks_with_canaries(|| {
            let bytes = read_document(&path).expect("read");
            let base_dir = path.parent().unwrap_or(Path::new("."));
            let set = CredentialSet::parse(&bytes, &manifest, Source::DevFile { base_dir })
                .expect("parse");
            check_set(&set);
        });
        assert_eq!(hits, 0, "{value}: freed blocks held a secret");
    }
}

/// Writes `text` to `path` through one buffer sized up front and zeroized after: no copy of
/// its secrets is left in freed memory for an allocation of the code under test to inherit
/// unwritten and free again, which the scan would blame on that code.
fn write_secret_text(path: &Path, text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    const ROOM: usize = 4096;
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(ROOM));
    buf.write_fmt(text).expect("format");
    assert_eq!(buf.capacity(), ROOM, "the text outgrew its buffer");
    std::fs::write(path, &*buf).expect("write");
}

/// A document for `dev` whose file_upload entry gives `"path": "k.pem"`, a file holding
/// `FILE_CONTENT`, beside `value` as every secret string.
fn write_path_document(dir: &Path, value: &str) -> std::path::PathBuf {
    let key = dir.join("k.pem");
    std::fs::write(&key, FILE_CONTENT).expect("write the key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod the key");
    let path = dir.join("connections.json");
    write_secret_text(
        &path,
        format_args!(
            r#"{{"connections": {{
            "openai": {{"fields": {{"api_key": {value}, "org": {value}}}}},
            "github": {{"access_token": {value}, "token_type": "bearer"}},
            "deploy_key": {{"path": "k.pem"}}
        }}}}"#
        ),
    );
    path
}

/// A file_upload entry giving `"path"` (the example's deploy key): the file's bytes, read by
/// `dev` into a buffer of the largest size allowed and moved into a secret of their own
/// size, leave no copy in freed memory.
#[test]
fn reading_a_path_entrys_file_leaves_no_secret_in_freed_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    set_needles();
    let manifest = manifest();
    let dir = tempfile::tempdir().expect("tempdir");
    for &(value, _) in VALUES {
        let path = write_path_document(dir.path(), value);
        let hits = freed_blocks_with_canaries(|| {
            let bytes = read_document(&path).expect("read");
            let set = CredentialSet::parse(
                &bytes,
                &manifest,
                Source::DevFile {
                    base_dir: dir.path(),
                },
            )
            .expect("parse");
            check_set(&set);
        });
        assert_eq!(hits, 0, "{value}: freed blocks held a secret");
    }
}

/// `seal` reads a `"path"` entry's file as `dev` does and writes it into the document as
/// `content_base64`: neither the file's bytes nor their base64 are left in freed memory.
#[test]
fn embedding_a_path_entrys_file_for_seal_leaves_no_secret_in_freed_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    set_needles();
    let manifest = manifest();
    let dir = tempfile::tempdir().expect("tempdir");
    // As `seal` allows: the most that fits, base64-encoded, in a bundle.
    let max_file = (bundle::MAX_PLAINTEXT_BYTES / 4 * 3) as u64;
    for &(value, _) in VALUES {
        let path = write_path_document(dir.path(), value);
        let hits = freed_blocks_with_canaries(|| {
            let bytes = read_document(&path).expect("read");
            let with = embed_paths(&bytes, dir.path(), max_file)
                .expect("embed")
                .expect("a path entry");
            // The document as a sandbox gets it: the file's content in it, in base64.
            let set =
                CredentialSet::parse(&with.document, &manifest, Source::Bundle).expect("parse");
            check_set(&set);
        });
        assert_eq!(hits, 0, "{value}: freed blocks held a secret");
    }
}

/// Starting the agent with an env-delivered field: its `NAME=value` for `execve` is built in
/// zeroizing memory, and no copy is made anywhere else (std's `Command::env` kept three, in
/// its env map, its captured env and its envp, and freed them as they were). The agent, a
/// bare `sh` found in its own `PATH`, checks that it got the value, without the canary
/// appearing whole in its argv.
#[test]
fn starting_the_agent_leaves_no_env_delivered_secret_in_freed_memory() {
    use grexal_sidecar::agent::{self, AgentSpec, EnvPlan, Signals};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    set_needles();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let creds = vec![(
        "OPENAI_API_KEY".to_owned(),
        grexal_sidecar::secret::SecretString::from("CNRY-Q7x-env-value-0123456789"),
    )];
    let dir = tempfile::tempdir().expect("tempdir");
    let hits = freed_blocks_with_canaries(|| {
        rt.block_on(async {
            let plan = EnvPlan {
                socket: &dir.path().join("sidecar.sock"),
                credentials_dir: &dir.path().join("creds"),
                browser_cdp_url: None,
                credentials: &creds,
                user: None,
            };
            let base = vec![("PATH".into(), "/usr/bin:/bin".into())];
            let spec = AgentSpec {
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    r#"[ "${OPENAI_API_KEY#CNRY-}" = "Q7x-env-value-0123456789" ]"#.into(),
                ],
                user: None,
                env: agent::build_env(base, &plan).expect("env"),
                cwd: None,
                take_terminal: false,
            };
            let exit = agent::run(
                spec,
                Signals::install().expect("signals"),
                tokio_util::sync::CancellationToken::new(),
                std::time::Duration::from_secs(5),
            )
            .await
            .expect("run");
            assert_eq!(exit.code, 0, "the agent did not get the value");
        });
    });
    assert_eq!(hits, 0, "{hits} freed blocks held the env-delivered secret");
}
