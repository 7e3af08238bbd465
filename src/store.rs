//! The single owner of the current credentials.
//!
//! Firecracker style: readers (every `ctx.connect`) take a cheap snapshot — an `Arc` clone
//! under a short, uncontended `RwLock` read — while writers (a bundle pushed on the
//! control endpoint, the boot bundle, `dev`'s plaintext file) are serialized by one async
//! mutex, so two pushes can never interleave. An install either completes (files written,
//! snapshot swapped, event published) or leaves the current snapshot untouched.
//!
//! A bundle may omit pre-collected connections: the install succeeds, the omitted ones
//! are reported as `missing` (`credential_missing` on the API) and logged by id.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::{watch, Mutex};

use crate::bundle::{BundleError, Opener};
use crate::credentials::{CredentialSet, CredentialsError, Source};
use crate::inject::{InjectError, Injector, Materialized};
use crate::manifest::{AuthMode, Manifest};
use crate::platform::events::{EventBus, PlatformEvent};
use crate::secret::ExposeSecret;

/// Why an install was refused. The current credentials are untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// This daemon has no sandbox key (`dev`), so it cannot open bundles.
    #[error("this daemon does not accept sealed bundles")]
    NoOpener,
    #[error("bundle refused")]
    Bundle(#[source] BundleError),
    #[error("bundle contents do not match the manifest")]
    Contents(#[source] CredentialsError),
    #[error("writing credentials failed")]
    Inject(#[source] InjectError),
}

/// Why `ctx.connect(id)` cannot be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Not declared in the manifest (or not a valid id at all).
    #[error("connection is not declared")]
    NotFound,
    /// Declared, but its mode has nothing to connect to (`browser_login`).
    #[error("connection's auth mode has no credential to connect to")]
    InvalidAuthMode { mode: &'static str },
    /// Declared and pre-collected, but no credential for it is installed.
    #[error("connection's credential has not arrived")]
    Missing,
}

/// What the agent may expect of a declared connection right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// A credential is installed: `ctx.connect` answers.
    Ready,
    /// Pre-collected, but no credential is installed.
    Missing,
    /// `browser_login`: the user logs in through a takeover, there is nothing to connect to.
    Interactive,
}

pub struct Store {
    manifest: Arc<Manifest>,
    /// The snapshot readers clone. Held for the duration of an `Arc` clone or swap only.
    current: RwLock<Option<Arc<Materialized>>>,
    opener: Option<Opener>,
    injector: Injector,
    events: EventBus,
    /// Serializes writers: open, parse, inject and swap happen under it, in that order.
    install: Mutex<()>,
    /// The installed version, for the daemon to wait on ("credentials are in place").
    installed: watch::Sender<Option<u64>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("connections", &self.manifest.connections.len())
            .field("version", &self.version())
            .field("accepts_bundles", &self.accepts_bundles())
            .finish_non_exhaustive()
    }
}

impl Store {
    pub fn new(
        manifest: Manifest,
        opener: Option<Opener>,
        injector: Injector,
        events: EventBus,
    ) -> Self {
        let (installed, _) = watch::channel(None);
        Self {
            manifest: Arc::new(manifest),
            current: RwLock::new(None),
            opener,
            injector,
            events,
            install: Mutex::new(()),
            installed,
        }
    }

    pub fn manifest(&self) -> &Arc<Manifest> {
        &self.manifest
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The current credentials, or `None` before the first install. Cheap: an `Arc` clone.
    pub fn snapshot(&self) -> Option<Arc<Materialized>> {
        // A poisoned lock only means a writer panicked between two plain assignments; the
        // value is still a whole `Option<Arc<_>>`.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a sealed bundle can be opened here: `run` without `--platform-key` (allowed
    /// when the manifest declares nothing pre-collected) and `dev` have no opener.
    pub fn accepts_bundles(&self) -> bool {
        self.opener.is_some()
    }

    /// The installed version, if any.
    pub fn version(&self) -> Option<u64> {
        *self.installed.borrow()
    }

    /// Ready means `ctx.connect` can be served: credentials are installed, or the manifest
    /// declares nothing pre-collected. A latch: once true it stays true.
    pub fn is_ready(&self) -> bool {
        self.version().is_some()
            || !self
                .manifest
                .connections
                .iter()
                .any(|c| c.mode.is_pre_collected())
    }

    /// A receiver of the installed version; `wait_for(Option::is_some)` waits for the first
    /// install.
    pub fn subscribe_installed(&self) -> watch::Receiver<Option<u64>> {
        self.installed.subscribe()
    }

    /// Waits until the first credentials are installed; returns their version.
    pub async fn wait_installed(&self) -> u64 {
        let mut rx = self.installed.subscribe();
        loop {
            if let Some(version) = *rx.borrow_and_update() {
                return version;
            }
            // The sender lives in `self`, so it cannot be dropped while we borrow `self`.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The state of a declared connection; `None` if `id` is not declared.
    pub fn connection_state(&self, id: &str) -> Option<ConnectionState> {
        let connection = self.manifest.connection(id)?;
        Some(state_of(&connection.mode, self.snapshot().as_deref(), id))
    }

    /// Every declared connection with its state, in manifest order.
    pub fn connection_states(&self) -> Vec<(&crate::manifest::Connection, ConnectionState)> {
        let snapshot = self.snapshot();
        self.manifest
            .connections
            .iter()
            .map(|c| (c, state_of(&c.mode, snapshot.as_deref(), &c.id)))
            .collect()
    }

    /// The body `ctx.connect(id)` returns: the JSON object serialized at install time.
    /// The returned `Bytes` shares the snapshot's (zeroized-on-drop) buffer; no copy of
    /// the secret is made here.
    pub fn connect(&self, id: &str) -> Result<Bytes, ConnectError> {
        let connection = self.manifest.connection(id).ok_or(ConnectError::NotFound)?;
        if let AuthMode::BrowserLogin { .. } = connection.mode {
            return Err(ConnectError::InvalidAuthMode {
                mode: connection.mode.name(),
            });
        }
        let snapshot = self.snapshot().ok_or(ConnectError::Missing)?;
        if !snapshot.bodies.contains_key(id) {
            return Err(ConnectError::Missing);
        }
        Ok(Bytes::from_owner(BodyOwner {
            snapshot,
            id: id.to_owned(),
        }))
    }

    /// Opens a sealed bundle and installs its credentials. Returns the installed version.
    /// On any error the current credentials stay in place.
    pub async fn install_bundle(&self, bytes: &[u8], now: u64) -> Result<u64, StoreError> {
        let opener = self.opener.as_ref().ok_or(StoreError::NoOpener)?;
        let _writer = self.install.lock().await;
        let installed = self.version();
        let opened = opener
            .open(bytes, now, installed)
            .map_err(StoreError::Bundle)?;
        let creds = CredentialSet::parse(
            opened.plaintext.expose_secret(),
            &self.manifest,
            Source::Bundle,
        )
        .map_err(StoreError::Contents)?;
        self.install_locked(&creds, opened.version)
    }

    /// Installs plaintext credentials (`dev`, or a boot path that parsed them itself).
    pub async fn install_plaintext(
        &self,
        creds: &CredentialSet,
        version: u64,
    ) -> Result<u64, StoreError> {
        let _writer = self.install.lock().await;
        self.install_locked(creds, version)
    }

    /// The last step of every install, for callers that materialized credentials
    /// themselves (tests, benchmarks): swap the snapshot, release waiters, publish.
    #[doc(hidden)]
    pub fn install_materialized(&self, materialized: Materialized) -> u64 {
        let version = materialized.version;
        if let Some(previous) = self.snapshot() {
            let changed = env_changes(&previous.env, &materialized.env);
            if !changed.is_empty() {
                // Names are the manifest's, not secrets. An agent reads its environment
                // once, at its start; the daemon cannot change it afterwards.
                tracing::warn!(
                    version,
                    ?changed,
                    "env-delivered credentials changed: an agent already running keeps the values it started with (ctx.connect, the files and the env file have the new ones)"
                );
            }
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(materialized));
        self.installed.send_replace(Some(version));
        self.events
            .publish(PlatformEvent::CredentialsInstalled { version });
        version
    }

    /// Removes the credential files (at shutdown). Waits for an install in progress.
    pub async fn wipe(&self) -> Result<(), StoreError> {
        let _writer = self.install.lock().await;
        self.injector.wipe().map_err(StoreError::Inject)
    }

    fn install_locked(&self, creds: &CredentialSet, version: u64) -> Result<u64, StoreError> {
        let missing: Vec<&str> = creds
            .missing(&self.manifest)
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        if !missing.is_empty() {
            // Ids are declared names, not secrets.
            tracing::warn!(
                version,
                ?missing,
                "credentials installed without some pre-collected connections"
            );
        }
        // The injector writes small files on a local filesystem; this is short enough to do
        // on the runtime thread, and keeping it under the writer lock is what serializes it.
        let materialized = self
            .injector
            .install(&self.manifest, creds, version)
            .map_err(StoreError::Inject)?;
        let version = self.install_materialized(materialized);
        tracing::info!(
            version,
            connections = creds.connections.len(),
            "credentials installed"
        );
        Ok(version)
    }
}

/// The env names whose value differs between two installs: changed, added or withdrawn,
/// in the order they first appear.
fn env_changes<'a>(
    old: &'a [(String, crate::secret::SecretString)],
    new: &'a [(String, crate::secret::SecretString)],
) -> Vec<&'a str> {
    use crate::secret::ExposeSecret;
    let value = |env: &'a [(String, crate::secret::SecretString)], name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.expose_secret().as_bytes())
    };
    let mut changed: Vec<&str> = Vec::new();
    for (name, _) in old.iter().chain(new) {
        if !changed.contains(&name.as_str()) && value(old, name) != value(new, name) {
            changed.push(name);
        }
    }
    changed
}

fn state_of(mode: &AuthMode, snapshot: Option<&Materialized>, id: &str) -> ConnectionState {
    if !mode.is_pre_collected() {
        ConnectionState::Interactive
    } else if snapshot.is_some_and(|m| m.bodies.contains_key(id)) {
        ConnectionState::Ready
    } else {
        ConnectionState::Missing
    }
}

/// Keeps the snapshot alive while a response body borrows one of its buffers.
struct BodyOwner {
    snapshot: Arc<Materialized>,
    id: String,
}

impl AsRef<[u8]> for BodyOwner {
    fn as_ref(&self) -> &[u8] {
        // `connect` checked the key before building the owner; the map is immutable.
        self.snapshot
            .bodies
            .get(&self.id)
            .map(|b| b.expose_secret())
            .unwrap_or(&[])
    }
}

/// Builders for tests (unit and integration) that cannot call the parsers.
#[doc(hidden)]
pub mod testing {
    use std::collections::BTreeMap;

    use crate::inject::{Injector, Layout, Materialized};
    use crate::manifest::{AuthMode, Connection, Delivery, Manifest, OauthProvider, SecretField};
    use crate::secret::secret_bytes;

    /// An injector over a fresh, empty root of its own, for tests that install
    /// `Materialized` values directly and never write through it.
    pub fn inert_injector() -> Injector {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "grexal-test-inert-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        Injector::new(Layout {
            root,
            owner: None,
            env_file: None,
        })
        .expect("an injector over a fresh temp root")
    }

    /// `openai` (secret_input), `google` (oauth), `ssh_key` (file), `portal` (browser_login).
    pub fn manifest() -> Manifest {
        let field = |name: &str| SecretField {
            name: name.into(),
            label: name.into(),
            secret: true,
            env_var: format!("OPENAI_{}", name.to_uppercase()),
        };
        Manifest {
            connections: vec![
                Connection {
                    id: "openai".into(),
                    display_name: "OpenAI".into(),
                    mode: AuthMode::SecretInput {
                        fields: vec![field("api_key")],
                        delivery: Delivery::RuntimeObject,
                    },
                },
                Connection {
                    id: "google".into(),
                    display_name: "Google".into(),
                    mode: AuthMode::OauthRedirect {
                        provider: OauthProvider {
                            auth_url: "https://accounts.example/auth".into(),
                            token_url: "https://accounts.example/token".into(),
                            scopes: vec!["email".into()],
                        },
                    },
                },
                Connection {
                    id: "ssh_key".into(),
                    display_name: "Deploy key".into(),
                    mode: AuthMode::FileUpload {
                        accepted_extensions: vec![".pem".into()],
                        max_size_bytes: 65536,
                        description: None,
                    },
                },
                Connection {
                    id: "portal".into(),
                    display_name: "Portal".into(),
                    mode: AuthMode::BrowserLogin {
                        login_url: Some("https://portal.example/login".into()),
                    },
                },
            ],
            sandbox_template: Some("desktop".into()),
        }
    }

    /// Bodies for `openai` and `ssh_key` (not `google`: it stays `missing`).
    pub fn materialized(version: u64, api_key: &str) -> Materialized {
        let mut bodies = BTreeMap::new();
        bodies.insert(
            "openai".to_owned(),
            secret_bytes(format!(r#"{{"api_key":"{api_key}"}}"#).into_bytes()),
        );
        bodies.insert(
            "ssh_key".to_owned(),
            secret_bytes(br#"{"file_path":"/tmp/grexal/ssh_key/id.pem"}"#.to_vec()),
        );
        Materialized {
            version,
            bodies,
            env: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn store() -> Store {
        Store::new(manifest(), None, inert_injector(), EventBus::new())
    }

    #[test]
    fn env_changes_name_what_a_running_agent_would_miss() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, crate::secret::SecretString)> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).into()))
                .collect()
        };
        let old = env(&[("A", "1"), ("B", "2"), ("C", "3")]);
        // The same values: nothing to say.
        assert!(env_changes(&old, &old).is_empty());
        // Changed, withdrawn, added; an unchanged one is not named.
        let new = env(&[("A", "1"), ("B", "two"), ("D", "4")]);
        assert_eq!(env_changes(&old, &new), ["B", "C", "D"]);
        assert_eq!(env_changes(&[], &old), ["A", "B", "C"]);
    }

    #[test]
    fn connect_errors_by_state() {
        let store = store();
        assert_eq!(store.connect("openai"), Err(ConnectError::Missing));
        assert_eq!(store.connect("nope"), Err(ConnectError::NotFound));
        assert_eq!(store.connect("../etc"), Err(ConnectError::NotFound));
        assert_eq!(
            store.connect("portal"),
            Err(ConnectError::InvalidAuthMode {
                mode: "browser_login"
            })
        );
        store.install_materialized(materialized(3, "sk-1"));
        assert_eq!(
            &store.connect("openai").unwrap()[..],
            br#"{"api_key":"sk-1"}"#
        );
        assert_eq!(store.connect("google"), Err(ConnectError::Missing));
    }

    #[test]
    fn states_and_readiness_latch() {
        let store = store();
        assert!(!store.is_ready());
        assert_eq!(
            store.connection_state("google"),
            Some(ConnectionState::Missing)
        );
        assert_eq!(
            store.connection_state("portal"),
            Some(ConnectionState::Interactive)
        );
        assert_eq!(store.connection_state("x"), None);
        store.install_materialized(materialized(1, "a"));
        assert!(store.is_ready());
        assert_eq!(store.version(), Some(1));
        // Still ready after a version that withdraws every credential: a latch.
        store.install_materialized(Materialized {
            version: 2,
            bodies: Default::default(),
            env: Vec::new(),
        });
        assert!(store.is_ready());
        assert_eq!(
            store.connection_state("openai"),
            Some(ConnectionState::Missing)
        );
        store.install_materialized(materialized(3, "a"));
        assert_eq!(
            store.connection_state("openai"),
            Some(ConnectionState::Ready)
        );
        let states: Vec<_> = store
            .connection_states()
            .into_iter()
            .map(|(c, s)| (c.id.clone(), s))
            .collect();
        assert_eq!(states.len(), 4);
    }

    #[test]
    fn browser_only_manifest_is_ready_without_credentials() {
        let mut m = manifest();
        m.connections.retain(|c| !c.mode.is_pre_collected());
        let store = Store::new(m, None, inert_injector(), EventBus::new());
        assert!(store.is_ready());
    }

    #[test]
    fn snapshot_outlives_swap() {
        let store = store();
        store.install_materialized(materialized(1, "old"));
        let body = store.connect("openai").unwrap();
        store.install_materialized(materialized(2, "new"));
        assert_eq!(&body[..], br#"{"api_key":"old"}"#);
        assert_eq!(
            &store.connect("openai").unwrap()[..],
            br#"{"api_key":"new"}"#
        );
    }

    #[tokio::test]
    async fn waiters_and_events_see_install() {
        let store = Arc::new(store());
        let mut events = store.events().subscribe();
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.wait_installed().await }
        });
        store.install_materialized(materialized(7, "k"));
        assert_eq!(waiter.await.unwrap(), 7);
        assert_eq!(
            *events.recv().await.unwrap(),
            PlatformEvent::CredentialsInstalled { version: 7 }
        );
    }

    #[tokio::test]
    async fn bundle_without_opener_is_refused_and_state_kept() {
        let store = store();
        store.install_materialized(materialized(1, "k"));
        assert!(matches!(
            store.install_bundle(b"x", 0).await,
            Err(StoreError::NoOpener)
        ));
        assert_eq!(store.version(), Some(1));
    }
}
