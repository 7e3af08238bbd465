//! Materialising credentials for the agent: files under the credentials root
//! (`/tmp/grexal/{connection_id}/...`), env vars, and an env file for other launchers.
//!
//! The daemon runs as root in a world-writable /tmp, so every path is opened relative to
//! a directory fd with `O_NOFOLLOW`, no directory someone else planted is reused, every
//! file is written to a temporary name and renamed into place, and an install either
//! completes or leaves the previous version untouched.
//!
//! Layout and decisions:
//! - Only connections that have files get a directory: `file_upload` (`{id}/{filename}`)
//!   and `secret_input` with `delivery: "file"` (`{id}/{field_name}`, one file per field).
//!   Directories are 0700 and files 0600, owned by `layout.owner` when set.
//! - An install builds every new directory as `.{id}.v{version}.{nonce}.tmp` inside the
//!   root (`nonce` random: the root is the agent's by default, and a name it could predict
//!   it could take first), then swaps each into place with `renameat2(RENAME_EXCHANGE)`
//!   (or `RENAME_NOREPLACE` when there is none yet), renames the env file into place, and
//!   only then removes the old versions. A failure before the last swap rolls back the
//!   swaps already made, so every connection keeps its old version; a reader of
//!   `{id}/{file}` sees the whole old or the whole new directory. Directories of
//!   connections that lost their credential are removed after the swap.
//! - A previous run killed before its `wipe` leaves its directories behind. The first
//!   install of a process adopts them as written: for each connection the manifest
//!   declares, a real directory (not a symlink) at `{id}` owned by the daemon's euid or the
//!   owner. So a connection that lost its credential meanwhile has its directory removed
//!   after the swap (or by `wipe`), like one withdrawn within a run. Nothing else in the
//!   root is touched: not undeclared names, not files or symlinks at a declared name.
//! - An existing `{id}` owned by the daemon's euid or the owner is replaced whole, whatever
//!   it is and holds: a directory of any mode with symlinks or subdirectories in it, or a
//!   symlink or file the agent put in its place. The exchange moves that entry itself (a
//!   rename never follows a link), and `fsops::remove_tree` unlinks a link without
//!   following it and descends only through `O_NOFOLLOW` fds, so nothing is read or written
//!   through it; refusing it would only let the agent block every later install (a token
//!   refresh of any connection) with one `ln -s`. What was unusual about it is logged at
//!   warn, entry names in their `Debug` form (a name may hold a newline). An entry of any
//!   other uid is not ours to remove: it is left as it is and the install fails with
//!   [`InjectError::Foreign`] (`credentials_dir_foreign` on the wire), changing nothing.
//!   A temporary name found taken (a collision of random names) is never reused: another
//!   nonce is drawn.
//! - `wipe` unlinks without overwriting contents first: on journaling filesystems and
//!   flash an overwrite gives no guarantee, and the sandbox is destroyed after the run.
//! - An existing root is validated but its mode and owner are left as they are; a root we
//!   create is 0700 and owned by `layout.owner`. The root's parent path is trusted config.

pub(crate) mod fsops;
pub(crate) use fsops::replace_file;
mod held;
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use nix::unistd::geteuid;

use self::held::{open_safe_dir, CreateAs, HeldDir};
use crate::credentials::{check_filename, Credential, CredentialSet};
use crate::manifest::{is_safe_id, AuthMode, Delivery, Manifest};
use crate::secret::{ExposeSecret, SecretBytes, SecretString};

/// The default credentials root.
pub const DEFAULT_ROOT: &str = "/tmp/grexal";

/// The uid/gid that owns everything written for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct Layout {
    /// The credentials root, `/tmp/grexal` by default.
    pub root: PathBuf,
    /// Owner of the root, the connection dirs and files; `None` keeps the daemon's own.
    pub owner: Option<Owner>,
    /// Where to write the env file (systemd EnvironmentFile syntax), if anywhere.
    pub env_file: Option<PathBuf>,
}

/// The result of an install: what the API serves and what the agent's env gets.
#[derive(Debug)]
pub struct Materialized {
    pub version: u64,
    /// Per connection id with a credential: the JSON object `ctx.connect(id)` returns,
    /// serialized once at install time so a request is a copy of these bytes.
    pub bodies: BTreeMap<String, SecretBytes>,
    /// Env vars for `delivery: "env"` fields, in manifest order.
    pub env: Vec<(String, SecretString)>,
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("unsafe credentials root {path}: {problem}")]
    UnsafeRoot { path: String, problem: String },
    #[error("connection {connection}: {problem}")]
    Unsafe { connection: String, problem: String },
    /// Something at a connection's path that belongs to neither the daemon nor the agent's
    /// user: not ours to replace or remove, so the install is refused and changes nothing.
    #[error(
        "connection {connection}: {path} belongs to uid {uid}, neither the daemon's nor the \
         agent user's; it is left as it is and no credential was changed (remove it, or give \
         the daemon its own --credentials-dir)"
    )]
    Foreign {
        connection: String,
        path: String,
        uid: u32,
    },
    #[error("writing credentials for connection {connection} failed")]
    Io {
        connection: String,
        #[source]
        source: std::io::Error,
    },
    /// Creating, opening or cleaning a directory (the root or the env file's) failed.
    #[error("preparing {path} failed")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "credentials root {path} is in use by another grexal-sidecar (it holds a lock on \
         the directory); stop it first, or give this one its own --credentials-dir"
    )]
    InUse { path: String },
    #[error("writing the env file {path} failed")]
    EnvFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

struct EnvTarget {
    dir: HeldDir,
    name: OsString,
    temp: OsString,
}

#[derive(Default)]
struct State {
    /// Connection ids whose directory the last install wrote (or, until the first install
    /// succeeds, a previous run left).
    written: BTreeSet<String>,
    env_written: bool,
    /// Whether a previous run's directories were looked for (by the first install).
    adopted: bool,
}

pub struct Injector {
    pub layout: Layout,
    root: HeldDir,
    /// The root path as UTF-8, for `file_path` in bodies.
    root_str: String,
    env: Option<EnvTarget>,
    /// Installs and wipe are serialized; the lock also guards what was written.
    state: Mutex<State>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// A new connection directory built under its temporary name.
struct Prepared {
    id: String,
    temp: OsString,
    has_old: bool,
}

fn unsafe_conn(connection: &str, problem: impl Into<String>) -> InjectError {
    InjectError::Unsafe {
        connection: connection.to_owned(),
        problem: problem.into(),
    }
}

fn conn_io(connection: &str, e: Errno) -> InjectError {
    InjectError::Io {
        connection: connection.to_owned(),
        source: fsops::errno(e),
    }
}

/// The temporary name of a connection's new directory: `.{id}.v{version}.{nonce}.tmp`.
fn temp_name(id: &str, version: u64, nonce: u64) -> OsString {
    OsString::from(format!(".{id}.v{version}.{nonce:016x}.tmp"))
}

/// Whether `name` has the shape of our temporary directory names, with a nonce or
/// without (the shape of daemons before the nonce, whose leftovers are ours as well).
fn is_temp_name(name: &OsStr) -> bool {
    let Some(s) = name.to_str() else { return false };
    let Some(mut inner) = s.strip_prefix('.').and_then(|s| s.strip_suffix(".tmp")) else {
        return false;
    };
    if let Some((rest, nonce)) = inner.rsplit_once('.') {
        if nonce.len() == 16
            && nonce
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            inner = rest;
        }
    }
    match inner.rsplit_once(".v") {
        Some((id, v)) => is_safe_id(id) && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// Takes an exclusive lock on the credentials root itself, held as long as its fd (the
/// injector's life): two daemons that share a root behind two sockets (which the instance
/// lock, one per socket, cannot see) would swap each other's credentials and wipe them. A
/// lock on the directory, not a file in it, leaves the root holding only the agent's
/// files. Taken before anything in the root is touched (the stale temporary directories
/// below, a previous run's directories adopted by the first install). A file system
/// without locks (an old NFS: `ENOLCK`, `EBADF` for a lock emulated on a read-only fd)
/// leaves the root unguarded rather than unusable.
fn lock_root(root: &HeldDir, root_str: &str) -> Result<(), InjectError> {
    // SAFETY: flock on an fd the HeldDir owns.
    if unsafe { libc::flock(root.fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Err(InjectError::InUse {
            path: root_str.to_owned(),
        }),
        Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::EBADF) => {
            tracing::warn!(path = root_str, %error, "cannot lock the credentials root: a second daemon sharing it would not be noticed");
            Ok(())
        }
        _ => Err(InjectError::Dir {
            path: root_str.to_owned(),
            source: error,
        }),
    }
}

impl Injector {
    /// Creates (or validates) the root: a real directory, not a symlink, owned by root or
    /// the owner, mode 0700, and locks it (`lock_root`: `InUse` while another injector,
    /// in this process or another, holds it). Also prepares the env file's directory (same rules) and
    /// removes temporary directories a crashed earlier run left in the root.
    pub fn new(layout: Layout) -> Result<Self, InjectError> {
        let root_str = layout
            .root
            .to_str()
            .ok_or_else(|| InjectError::UnsafeRoot {
                path: layout.root.display().to_string(),
                problem: "must be valid UTF-8".into(),
            })?
            .to_owned();
        let root = open_safe_dir(&layout.root, layout.owner, CreateAs::Private)?;
        lock_root(&root, &root_str)?;
        let env = match &layout.env_file {
            None => None,
            Some(path) => {
                let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                    return Err(InjectError::UnsafeRoot {
                        path: path.display().to_string(),
                        problem: "the env file must be a file path".into(),
                    });
                };
                let dir = open_safe_dir(parent, layout.owner, CreateAs::Shared)?;
                let mut temp = OsString::from(".");
                temp.push(name);
                temp.push(".tmp");
                // A temp file from a crashed run; unlinking never follows a symlink.
                fsops::remove_tree(dir.fd.as_raw_fd(), &temp).map_err(|e| InjectError::Dir {
                    path: parent.display().to_string(),
                    source: fsops::errno(e),
                })?;
                Some(EnvTarget {
                    dir,
                    name: name.to_os_string(),
                    temp,
                })
            }
        };
        let stale = fsops::list(root.fd.as_raw_fd()).map_err(|e| InjectError::Dir {
            path: root_str.clone(),
            source: fsops::errno(e),
        })?;
        for name in stale.iter().filter(|n| is_temp_name(n)) {
            tracing::info!(?name, "removing a stale temporary directory");
            fsops::remove_tree(root.fd.as_raw_fd(), name).map_err(|e| InjectError::Dir {
                path: root_str.clone(),
                source: fsops::errno(e),
            })?;
        }
        Ok(Injector {
            layout,
            root,
            root_str,
            env,
            state: Mutex::new(State::default()),
        })
    }

    /// The path of a connection's file: `{root}/{id}/{name}`.
    pub fn file_path(&self, connection_id: &str, name: &str) -> String {
        format!(
            "{}/{connection_id}/{name}",
            self.root_str.trim_end_matches('/')
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic mid-install leaves nothing the next install cannot handle.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn root_fd(&self) -> RawFd {
        self.root.fd.as_raw_fd()
    }

    /// Writes every credential of `creds` as version `version`, replacing the previous
    /// version atomically per connection directory. On error, nothing of the new version is
    /// left behind and the previous version is untouched.
    pub fn install(
        &self,
        manifest: &Manifest,
        creds: &CredentialSet,
        version: u64,
    ) -> Result<Materialized, InjectError> {
        let mut state = self.lock();
        if !state.adopted {
            self.adopt_leftovers(manifest, &mut state.written);
            state.adopted = true;
        }
        let plan = self.plan(manifest, creds)?;

        // Phase 1: build every new directory and the env file under temporary names.
        let mut prepared: Vec<Prepared> = Vec::new();
        for (id, files) in &plan.files {
            match self.prepare_dir(id, files, version) {
                Ok(p) => prepared.push(p),
                Err(e) => {
                    self.discard(&prepared);
                    return Err(e);
                }
            }
        }
        if let Some(target) = &self.env {
            if let Err(e) = self.prepare_env_file(target, version, &plan.env) {
                self.discard(&prepared);
                return Err(e);
            }
        }

        // Phase 2: swap everything into place; undo on failure.
        let mut swapped: Vec<&Prepared> = Vec::new();
        for p in &prepared {
            let id = OsStr::new(&p.id);
            let res = if p.has_old {
                fsops::rename_exchange(self.root_fd(), &p.temp, id)
            } else {
                fsops::rename_noreplace(self.root_fd(), &p.temp, id)
            };
            if let Err(e) = res {
                self.roll_back(&swapped);
                self.discard(&prepared);
                self.discard_env_temp();
                return Err(conn_io(&p.id, e));
            }
            swapped.push(p);
        }
        if let Some(target) = &self.env {
            if let Err(e) =
                fsops::rename_replace(target.dir.fd.as_raw_fd(), &target.temp, &target.name)
            {
                self.roll_back(&swapped);
                self.discard(&prepared);
                self.discard_env_temp();
                return Err(InjectError::EnvFile {
                    path: self.env_path(),
                    source: fsops::errno(e),
                });
            }
            state.env_written = true;
        }
        if let Err(error) = fsops::fsync(&self.root.fd) {
            tracing::warn!(%error, "fsync of the credentials root failed");
        }

        // Phase 3: the new version is in place; remove the old one.
        self.discard(&prepared);
        let now: BTreeSet<String> = plan.files.keys().cloned().collect();
        for gone in state.written.difference(&now) {
            if let Err(error) = fsops::remove_tree(self.root_fd(), OsStr::new(gone)) {
                tracing::warn!(connection = %gone, %error, "removing a withdrawn connection directory failed");
            }
        }
        state.written = now;
        tracing::info!(
            version,
            connections = plan.bodies.len(),
            directories = state.written.len(),
            env_vars = plan.env.len(),
            "credentials installed"
        );
        Ok(Materialized {
            version,
            bodies: plan.bodies,
            env: plan.env,
        })
    }

    /// Removes every file and directory this injector wrote (on exit): the connection
    /// directories, the env file, and the root and env directory if it created them and
    /// they are empty. Keeps going past a failure and reports the first.
    pub fn wipe(&self) -> Result<(), InjectError> {
        let mut state = self.lock();
        let mut first: Option<InjectError> = None;
        let written = std::mem::take(&mut state.written);
        for id in &written {
            if let Err(e) = fsops::remove_tree(self.root_fd(), OsStr::new(id)) {
                tracing::warn!(connection = %id, error = %e, "wipe failed");
                first.get_or_insert(conn_io(id, e));
            }
        }
        if let Some(target) = &self.env {
            let fd = target.dir.fd.as_raw_fd();
            let res = fsops::remove_tree(fd, &target.temp).and_then(|()| {
                if state.env_written {
                    fsops::unlink(fd, &target.name)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = res {
                tracing::warn!(error = %e, "wipe of the env file failed");
                first.get_or_insert(InjectError::EnvFile {
                    path: self.env_path(),
                    source: fsops::errno(e),
                });
            }
            state.env_written = false;
            remove_if_created_and_empty(&target.dir);
        }
        remove_if_created_and_empty(&self.root);
        first.map_or(Ok(()), Err)
    }

    fn env_path(&self) -> String {
        self.layout
            .env_file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Everything an install produces, computed before touching the filesystem.
    fn plan<'c>(
        &self,
        manifest: &Manifest,
        creds: &'c CredentialSet,
    ) -> Result<Plan<'c>, InjectError> {
        for id in creds.connections.keys() {
            if manifest.connection(id).is_none() {
                return Err(unsafe_conn(
                    id,
                    "has a credential but is not declared in the manifest",
                ));
            }
        }
        let mut plan = Plan::default();
        for conn in &manifest.connections {
            let id = conn.id.as_str();
            let Some(cred) = creds.connections.get(id) else {
                continue;
            };
            if !is_safe_id(id) {
                let shown: String = id.chars().take(64).collect();
                return Err(unsafe_conn(
                    &format!("{shown:?}"),
                    "id is not a safe path component",
                ));
            }
            let json_err = |e: serde_json::Error| InjectError::Io {
                connection: id.to_owned(),
                source: std::io::Error::other(e),
            };
            let body = match (&conn.mode, cred) {
                (
                    AuthMode::SecretInput { fields, delivery },
                    Credential::Secret { fields: values },
                ) => {
                    for f in fields {
                        let Some(value) = values.get(&f.name) else {
                            return Err(unsafe_conn(
                                id,
                                format!("field {:?} has no value", f.name),
                            ));
                        };
                        match delivery {
                            Delivery::Env => {
                                if value.expose_secret().contains('\0') {
                                    return Err(unsafe_conn(
                                        id,
                                        format!("field {:?} contains a NUL byte and cannot be an env var", f.name),
                                    ));
                                }
                                plan.env.push((f.env_var.clone(), value.clone()));
                            }
                            Delivery::File => {
                                if !is_safe_id(&f.name) {
                                    return Err(unsafe_conn(
                                        id,
                                        "a field name is not a safe path component",
                                    ));
                                }
                                plan.files.entry(id.to_owned()).or_default().push((
                                    OsString::from(&f.name),
                                    value.expose_secret().as_bytes(),
                                ));
                            }
                            Delivery::RuntimeObject => {}
                        }
                    }
                    render::secret_body(fields, values).map_err(json_err)?
                }
                (AuthMode::OauthRedirect { .. }, Credential::OAuth(token)) => {
                    render::oauth_body(token).map_err(json_err)?
                }
                (AuthMode::FileUpload { .. }, Credential::File(file)) => {
                    check_filename(&file.filename)
                        .map_err(|p| unsafe_conn(id, format!("the uploaded filename {p}")))?;
                    plan.files
                        .entry(id.to_owned())
                        .or_default()
                        .push((OsString::from(&file.filename), file.content.expose_secret()));
                    render::file_body(&self.file_path(id, &file.filename), file)
                        .map_err(json_err)?
                }
                (mode, _) => {
                    return Err(unsafe_conn(
                        id,
                        format!("the credential does not match auth_mode {}", mode.name()),
                    ));
                }
            };
            plan.bodies.insert(id.to_owned(), body);
        }
        Ok(plan)
    }

    /// Adds to `written` the directories a previous run of the daemon left (it was killed
    /// before its `wipe`): for each declared connection, a real directory at `{id}` owned by
    /// the daemon's euid or the owner. Anything else at such a name is left as it is; an
    /// install that writes that connection replaces it if it is the daemon's or the agent
    /// user's and refuses it otherwise (`check_existing`).
    fn adopt_leftovers(&self, manifest: &Manifest, written: &mut BTreeSet<String>) {
        for conn in &manifest.connections {
            let id = conn.id.as_str();
            if !is_safe_id(id) || written.contains(id) {
                continue;
            }
            match fsops::lstat_at(self.root_fd(), OsStr::new(id)) {
                Ok(None) => {}
                Ok(Some(st)) if fsops::is_dir(&st) && self.owns(st.st_uid) => {
                    tracing::info!(connection = %id, "adopting a connection directory a previous run left");
                    written.insert(id.to_owned());
                }
                Ok(Some(_)) => {
                    tracing::warn!(connection = %id, "leaving an entry at a connection's name that is not a directory we own");
                }
                Err(error) => {
                    tracing::warn!(connection = %id, %error, "looking for a previous run's directory failed");
                }
            }
        }
    }

    /// Whether `uid` is the daemon's or the agent user's: an entry of theirs in the root is
    /// ours to replace and remove.
    fn owns(&self, uid: u32) -> bool {
        uid == geteuid().as_raw() || self.layout.owner.is_some_and(|o| o.uid == uid)
    }

    /// Checks what is at `{root}/{id}` now: nothing (`false`), or an entry of the daemon or
    /// the agent's user (`true`), which the install exchanges out and removes whole,
    /// whatever it is and holds (the module docs say why that is safe). What is unusual
    /// about it is logged; an entry of another uid is refused, [`InjectError::Foreign`].
    fn check_existing(&self, id: &str) -> Result<bool, InjectError> {
        let name = OsStr::new(id);
        let Some(st) = fsops::lstat_at(self.root_fd(), name).map_err(|e| conn_io(id, e))? else {
            return Ok(false);
        };
        if !self.owns(st.st_uid) {
            return Err(InjectError::Foreign {
                connection: id.to_owned(),
                path: self.file_path(id, ""),
                uid: st.st_uid,
            });
        }
        let odd = Oddities::of(self.root_fd(), name, &st);
        if odd.any() {
            tracing::warn!(
                connection = id,
                kind = odd.kind,
                mode = odd.mode.map(|m| format!("{m:04o}")).as_deref(),
                symlinks = odd.symlinks,
                subdirectories = odd.subdirectories,
                special_files = odd.special,
                example = odd.example.as_deref().map(tracing::field::debug),
                "replacing a connection directory that was changed after it was written: it \
                 is exchanged out and removed whole, nothing in it is followed"
            );
        }
        Ok(true)
    }

    /// Builds `{root}/.{id}.v{version}.{nonce}.tmp` with the connection's files. On failure
    /// the temporary directory is removed.
    fn prepare_dir(
        &self,
        id: &str,
        files: &[(OsString, &[u8])],
        version: u64,
    ) -> Result<Prepared, InjectError> {
        let has_old = self.check_existing(id)?;
        let temp = self.make_temp_dir(id, version)?;
        let prepared = Prepared {
            id: id.to_owned(),
            temp,
            has_old,
        };
        match self.fill_dir(&prepared, files) {
            Ok(()) => Ok(prepared),
            Err(e) => {
                self.discard(std::slice::from_ref(&prepared));
                Err(e)
            }
        }
    }

    /// Creates an empty directory at a fresh temporary name and returns the name. A name
    /// that is taken (by what no one could have known we would pick) is left alone: what
    /// is there is not ours to remove, and another nonce is drawn.
    fn make_temp_dir(&self, id: &str, version: u64) -> Result<OsString, InjectError> {
        const ATTEMPTS: usize = 4;
        for _ in 0..ATTEMPTS {
            let temp = temp_name(id, version, rand::random());
            match fsops::mkdir(self.root_fd(), &temp) {
                Ok(()) => return Ok(temp),
                Err(Errno::EEXIST) => {
                    tracing::warn!(connection = id, name = ?temp, "a temporary name is taken; drawing another");
                }
                Err(e) => return Err(conn_io(id, e)),
            }
        }
        Err(conn_io(id, Errno::EEXIST))
    }

    fn fill_dir(&self, p: &Prepared, files: &[(OsString, &[u8])]) -> Result<(), InjectError> {
        let id = p.id.as_str();
        let dir = match fsops::open_dir(self.root_fd(), &p.temp) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                return Err(unsafe_conn(
                    id,
                    "the temporary directory was replaced by a symlink",
                ));
            }
            Err(e) => return Err(conn_io(id, e)),
        };
        let st = fsops::fstat(&dir).map_err(|e| conn_io(id, e))?;
        if !fsops::is_dir(&st) || st.st_uid != geteuid().as_raw() {
            return Err(unsafe_conn(
                id,
                "the temporary directory was replaced by one we did not create",
            ));
        }
        fsops::chmod(&dir, 0o700).map_err(|e| conn_io(id, e))?;
        for (name, content) in files {
            fsops::create_file(dir.as_raw_fd(), name, content, self.layout.owner).map_err(
                |source| InjectError::Io {
                    connection: id.to_owned(),
                    source,
                },
            )?;
        }
        fsops::chown(&dir, self.layout.owner).map_err(|e| conn_io(id, e))?;
        fsops::fsync(&dir).map_err(|e| conn_io(id, e))
    }

    fn prepare_env_file(
        &self,
        target: &EnvTarget,
        version: u64,
        env: &[(String, SecretString)],
    ) -> Result<(), InjectError> {
        let dir = target.dir.fd.as_raw_fd();
        let err = |source| InjectError::EnvFile {
            path: self.env_path(),
            source,
        };
        fsops::remove_tree(dir, &target.temp).map_err(|e| err(fsops::errno(e)))?;
        let text = render::env_file(version, env);
        let res = fsops::create_file(dir, &target.temp, &text, self.layout.owner);
        if let Err(e) = res {
            self.discard_env_temp();
            return Err(err(e));
        }
        Ok(())
    }

    fn discard_env_temp(&self) {
        if let Some(target) = &self.env {
            if let Err(error) = fsops::remove_tree(target.dir.fd.as_raw_fd(), &target.temp) {
                tracing::warn!(%error, "removing the temporary env file failed");
            }
        }
    }

    /// Removes the temporary names (a new version not swapped in, or an old one swapped
    /// out).
    fn discard(&self, prepared: &[Prepared]) {
        for p in prepared {
            if let Err(error) = fsops::remove_tree(self.root_fd(), &p.temp) {
                tracing::warn!(connection = %p.id, %error, "removing a temporary directory failed");
            }
        }
    }

    /// Undoes swaps in reverse order: an exchange is exchanged back; a fresh directory is
    /// moved back to its temporary name.
    fn roll_back(&self, swapped: &[&Prepared]) {
        for p in swapped.iter().rev() {
            let id = OsStr::new(&p.id);
            let res = if p.has_old {
                fsops::rename_exchange(self.root_fd(), &p.temp, id)
            } else {
                fsops::rename_noreplace(self.root_fd(), id, &p.temp)
            };
            if let Err(error) = res {
                tracing::error!(connection = %p.id, %error, "rolling back a credential swap failed");
            }
        }
    }
}

fn remove_if_created_and_empty(dir: &HeldDir) {
    if !dir.created {
        return;
    }
    match nix::unistd::unlinkat(
        Some(dir.parent.as_raw_fd()),
        dir.name.as_os_str(),
        nix::unistd::UnlinkatFlags::RemoveDir,
    ) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(error) => {
            tracing::warn!(path = %dir.path.display(), %error, "leaving a directory we created");
        }
    }
}

/// What is unusual about an entry at a connection's name, for the log: nothing for a
/// 0700 directory holding only regular files, as the injector writes it.
#[derive(Debug, Default)]
struct Oddities {
    /// What the entry is when it is not a directory.
    kind: Option<&'static str>,
    /// The directory's mode when it is not 0700.
    mode: Option<u32>,
    symlinks: usize,
    subdirectories: usize,
    /// FIFOs, sockets and device nodes.
    special: usize,
    /// The name of the first unusual entry in the directory, as it is (it may hold any
    /// byte but `/` and NUL): logged only in its `Debug` form.
    example: Option<OsString>,
}

impl Oddities {
    /// Looks at `name` in `dir` (whose `lstat` is `st`) and at the entries of a directory
    /// there, through an fd opened with `O_NOFOLLOW`, following nothing. Best effort: what
    /// cannot be looked at (it changed meanwhile) is not reported.
    fn of(dir: RawFd, name: &OsStr, st: &nix::sys::stat::FileStat) -> Self {
        let mut odd = Oddities::default();
        let kind = fsops::Kind::of(st);
        if kind != fsops::Kind::Dir {
            odd.kind = Some(kind.describe());
            return odd;
        }
        if st.st_mode & 0o7777 != 0o700 {
            odd.mode = Some(st.st_mode & 0o7777);
        }
        let Ok(fd) = fsops::open_dir(dir, name) else {
            return odd;
        };
        for entry in fsops::list(fd.as_raw_fd()).unwrap_or_default() {
            let Ok(Some(st)) = fsops::lstat_at(fd.as_raw_fd(), &entry) else {
                continue;
            };
            let count = match fsops::Kind::of(&st) {
                fsops::Kind::File => continue,
                fsops::Kind::Symlink => &mut odd.symlinks,
                fsops::Kind::Dir => &mut odd.subdirectories,
                fsops::Kind::Special => &mut odd.special,
            };
            *count += 1;
            odd.example.get_or_insert(entry);
        }
        odd
    }

    fn any(&self) -> bool {
        self.kind.is_some()
            || self.mode.is_some()
            || self.symlinks + self.subdirectories + self.special > 0
    }
}

#[derive(Default)]
struct Plan<'c> {
    bodies: BTreeMap<String, SecretBytes>,
    env: Vec<(String, SecretString)>,
    /// Per connection id, the files of its directory.
    files: BTreeMap<String, Vec<(OsString, &'c [u8])>>,
}

#[cfg(test)]
mod tests;
