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
//! - An install builds every new directory as `.{id}.v{version}.tmp` inside the root, then
//!   swaps each into place with `renameat2(RENAME_EXCHANGE)` (or `RENAME_NOREPLACE` when
//!   there is none yet), renames the env file into place, and only then removes the old
//!   versions. A failure before the last swap rolls back the swaps already made, so every
//!   connection keeps its old version; a reader of `{id}/{file}` sees the whole old or the
//!   whole new directory. Directories of connections that lost their credential are
//!   removed after the swap.
//! - A previous run killed before its `wipe` leaves its directories behind. The first
//!   install of a process adopts them as written: for each connection the manifest
//!   declares, a real directory (not a symlink) at `{id}` owned by the daemon's euid or the
//!   owner. So a connection that lost its credential meanwhile has its directory removed
//!   after the swap (or by `wipe`), like one withdrawn within a run. Nothing else in the
//!   root is touched: not undeclared names, not files or symlinks at a declared name.
//! - An existing `{id}` is replaced only if it is a real directory owned by the daemon's
//!   euid or the owner, not group/world writable, and holds no symlink; otherwise the
//!   install fails with [`InjectError::Unsafe`]. A symlink or foreign entry at a temporary
//!   name fails the same way; our own leftovers there are removed.
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

fn temp_name(id: &str, version: u64) -> OsString {
    OsString::from(format!(".{id}.v{version}.tmp"))
}

/// Whether `name` has the shape of our temporary directory names.
fn is_temp_name(name: &OsStr) -> bool {
    let Some(s) = name.to_str() else { return false };
    let Some(inner) = s.strip_prefix('.').and_then(|s| s.strip_suffix(".tmp")) else {
        return false;
    };
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
            tracing::info!(name = %name.to_string_lossy(), "removing a stale temporary directory");
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
    /// install that writes that connection refuses it in `check_existing`.
    fn adopt_leftovers(&self, manifest: &Manifest, written: &mut BTreeSet<String>) {
        let euid = geteuid().as_raw();
        for conn in &manifest.connections {
            let id = conn.id.as_str();
            if !is_safe_id(id) || written.contains(id) {
                continue;
            }
            match fsops::lstat_at(self.root_fd(), OsStr::new(id)) {
                Ok(None) => {}
                Ok(Some(st))
                    if fsops::is_dir(&st)
                        && (st.st_uid == euid
                            || self.layout.owner.is_some_and(|o| o.uid == st.st_uid)) =>
                {
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

    /// Checks what is at `{root}/{id}` now: nothing, or a directory safe to replace.
    fn check_existing(&self, id: &str) -> Result<bool, InjectError> {
        let name = OsStr::new(id);
        let Some(st) = fsops::lstat_at(self.root_fd(), name).map_err(|e| conn_io(id, e))? else {
            return Ok(false);
        };
        let shown = self.file_path(id, "");
        if fsops::is_symlink(&st) {
            return Err(unsafe_conn(
                id,
                format!("{shown} is a symlink; refusing to replace it"),
            ));
        }
        if !fsops::is_dir(&st) {
            return Err(unsafe_conn(
                id,
                format!("{shown} exists and is not a directory"),
            ));
        }
        let dir = match fsops::open_dir(self.root_fd(), name) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                return Err(unsafe_conn(
                    id,
                    format!("{shown} was replaced by a symlink"),
                ));
            }
            Err(e) => return Err(conn_io(id, e)),
        };
        let st = fsops::fstat(&dir).map_err(|e| conn_io(id, e))?;
        let euid = geteuid().as_raw();
        if st.st_uid != euid && self.layout.owner.is_none_or(|o| o.uid != st.st_uid) {
            return Err(unsafe_conn(
                id,
                format!(
                    "{shown} is owned by uid {}, not by the daemon or the agent's user",
                    st.st_uid
                ),
            ));
        }
        if fsops::is_group_or_world_writable(&st) {
            return Err(unsafe_conn(
                id,
                format!("{shown} is writable by group or others"),
            ));
        }
        for entry in fsops::list(dir.as_raw_fd()).map_err(|e| conn_io(id, e))? {
            if let Some(st) =
                fsops::lstat_at(dir.as_raw_fd(), &entry).map_err(|e| conn_io(id, e))?
            {
                if fsops::is_symlink(&st) {
                    return Err(unsafe_conn(
                        id,
                        format!(
                            "{shown} contains a symlink ({}); refusing to replace it",
                            entry.to_string_lossy()
                        ),
                    ));
                }
            }
        }
        Ok(true)
    }

    /// Builds `{root}/.{id}.v{version}.tmp` with the connection's files. On failure the
    /// temporary directory is removed.
    fn prepare_dir(
        &self,
        id: &str,
        files: &[(OsString, &[u8])],
        version: u64,
    ) -> Result<Prepared, InjectError> {
        let has_old = self.check_existing(id)?;
        let temp = temp_name(id, version);
        let root = self.root_fd();
        match fsops::mkdir(root, &temp) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                // Our own leftover (a real directory we own) is removed; anything else at
                // this name was planted.
                let st = fsops::lstat_at(root, &temp).map_err(|e| conn_io(id, e))?;
                let ours =
                    st.is_some_and(|st| fsops::is_dir(&st) && st.st_uid == geteuid().as_raw());
                if !ours {
                    return Err(unsafe_conn(
                        id,
                        format!(
                            "the temporary name {} is taken by something we did not create",
                            temp.to_string_lossy()
                        ),
                    ));
                }
                fsops::remove_tree(root, &temp).map_err(|e| conn_io(id, e))?;
                fsops::mkdir(root, &temp).map_err(|e| conn_io(id, e))?;
            }
            Err(e) => return Err(conn_io(id, e)),
        }
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

#[derive(Default)]
struct Plan<'c> {
    bodies: BTreeMap<String, SecretBytes>,
    env: Vec<(String, SecretString)>,
    /// Per connection id, the files of its directory.
    files: BTreeMap<String, Vec<(OsString, &'c [u8])>>,
}

#[cfg(test)]
mod tests;
