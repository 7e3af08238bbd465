//! The agent's environment.
//!
//! The rule, in order (later steps win over earlier ones):
//! 1. The daemon's own environment, minus
//!    - every `GREXAL_*` variable except those in `PASSED_GREXAL_VARS`: the `GREXAL_*`
//!      namespace is the daemon's configuration, and some of it names secrets (the sandbox
//!      key, the control token file, the bundle), so it is dropped by default rather than
//!      by a list of known secret names that a new option could slip past;
//!    - the service manager's variables addressed to the daemon (`NOTIFY_SOCKET`, socket
//!      activation, watchdog, `CREDENTIALS_DIRECTORY`), so the agent cannot speak for it;
//!    - when switching user, `XDG_RUNTIME_DIR` (the daemon's, unusable by the agent).
//! 2. The env-delivered credential fields, exposed only when the agent's envp is built
//!    (`exec::Exec`, in zeroizing memory).
//! 3. What the daemon sets itself: `GREXAL_SIDECAR_SOCKET`, `GREXAL_CREDENTIALS_DIR`
//!    (the root of the file-delivered credentials), `GREXAL_BROWSER_CDP_URL` (on a desktop), and `HOME`/`USER`/`LOGNAME` of the agent user when switching user.
//!    A credential field named like one of these is shadowed (and logged by name).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::secret::{ExposeSecret, SecretString};

use super::{AgentError, AgentUser};

/// The `GREXAL_*` variables of the daemon's environment that reach the agent.
/// `GREXAL_TASK_INPUT` is how Grexal hands the agent its task input.
pub const PASSED_GREXAL_VARS: &[&str] = &["GREXAL_TASK_INPUT"];

/// The variable holding the agent socket's path (fixed by the contract).
pub const SOCKET_VAR: &str = "GREXAL_SIDECAR_SOCKET";
/// The variable holding the root of the credential files (`{root}/{connection_id}/...`):
/// under `dev` or a non-default `--credentials-dir` it is not the documented /tmp/grexal.
pub const CREDENTIALS_DIR_VAR: &str = "GREXAL_CREDENTIALS_DIR";
/// The variable holding the desktop browser's CDP endpoint.
pub const BROWSER_CDP_URL_VAR: &str = "GREXAL_BROWSER_CDP_URL";

/// Service-manager variables addressed to the daemon, never passed on.
const SERVICE_MANAGER_VARS: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "CREDENTIALS_DIRECTORY",
];

/// A value of the agent's environment. `Debug` never prints a value: plain values come
/// from the daemon's environment, which may hold things the deployer considers private.
#[derive(Clone)]
pub enum EnvValue {
    Plain(OsString),
    Secret(SecretString),
}

impl std::fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvValue::Plain(_) => f.write_str("Plain(..)"),
            EnvValue::Secret(_) => f.write_str("Secret([REDACTED])"),
        }
    }
}

impl EnvValue {
    /// The value's bytes. For a secret this is the one place it is exposed: `exec::Exec`
    /// copies it once, into the agent's zeroize-on-drop envp (never into `Command::env`,
    /// whose copies are freed unzeroized), and drops that right after the spawn.
    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            EnvValue::Plain(value) => value.as_bytes(),
            EnvValue::Secret(value) => value.expose_secret().as_bytes(),
        }
    }
}

/// What the daemon adds to the agent's environment.
#[derive(Debug, Clone, Copy)]
pub struct EnvPlan<'a> {
    /// The agent socket (`GREXAL_SIDECAR_SOCKET`).
    pub socket: &'a Path,
    /// The credentials root (`GREXAL_CREDENTIALS_DIR`).
    pub credentials_dir: &'a Path,
    /// The browser's CDP endpoint, on a desktop sandbox.
    pub browser_cdp_url: Option<&'a str>,
    /// `inject::Materialized::env`: the env-delivered credential fields.
    pub credentials: &'a [(String, SecretString)],
    /// The user the agent will run as, if the daemon switches to one.
    pub user: Option<&'a AgentUser>,
}

/// Builds the agent's environment from `base` (the daemon's, `std::env::vars_os()` in
/// production; a fixed list in tests) by the rule in the module docs.
pub fn build_env<I>(base: I, plan: &EnvPlan<'_>) -> Result<Vec<(OsString, EnvValue)>, AgentError>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let mut env: Vec<(OsString, EnvValue)> = Vec::new();
    for (name, value) in base {
        if passes(&name, plan.user.is_some()) {
            set(&mut env, name, EnvValue::Plain(value));
        }
    }

    let mut ours: Vec<(OsString, EnvValue)> = vec![
        (
            SOCKET_VAR.into(),
            EnvValue::Plain(plan.socket.as_os_str().to_owned()),
        ),
        (
            CREDENTIALS_DIR_VAR.into(),
            EnvValue::Plain(plan.credentials_dir.as_os_str().to_owned()),
        ),
    ];
    if let Some(url) = plan.browser_cdp_url {
        ours.push((BROWSER_CDP_URL_VAR.into(), EnvValue::Plain(url.into())));
    }
    if let Some(user) = plan.user {
        ours.push((
            "HOME".into(),
            EnvValue::Plain(user.home.as_os_str().to_owned()),
        ));
        ours.push(("USER".into(), EnvValue::Plain(user.name.clone().into())));
        ours.push(("LOGNAME".into(), EnvValue::Plain(user.name.clone().into())));
    }

    for (name, value) in plan.credentials {
        if !valid_name(name.as_bytes()) {
            return Err(AgentError::InvalidEnv { name: name.clone() });
        }
        if value.expose_secret().as_bytes().contains(&0) {
            return Err(AgentError::InvalidEnv { name: name.clone() });
        }
        if ours.iter().any(|(n, _)| n == OsStr::new(name)) {
            tracing::warn!(var = %name, "an env-delivered credential is shadowed by a variable the daemon sets");
            continue;
        }
        set(&mut env, name.into(), EnvValue::Secret(value.clone()));
    }
    for (name, value) in ours {
        set(&mut env, name, value);
    }
    Ok(env)
}

fn passes(name: &OsStr, switching_user: bool) -> bool {
    let bytes = name.as_bytes();
    if bytes.starts_with(b"GREXAL_") {
        return PASSED_GREXAL_VARS.iter().any(|p| p.as_bytes() == bytes);
    }
    if SERVICE_MANAGER_VARS.iter().any(|v| v.as_bytes() == bytes) {
        return false;
    }
    !(switching_user && bytes == b"XDG_RUNTIME_DIR")
}

/// A name that can pass through `execve` unchanged.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && !name.contains(&b'=') && !name.contains(&0)
}

fn set(env: &mut Vec<(OsString, EnvValue)>, name: OsString, value: EnvValue) {
    match env.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn base() -> Vec<(OsString, OsString)> {
        [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/root"),
            ("GREXAL_SANDBOX_KEY", "/etc/grexal/sandbox.key"),
            ("GREXAL_CONTROL_TOKEN_FILE", "/etc/grexal/token"),
            ("GREXAL_SOME_FUTURE_OPTION", "x"),
            ("GREXAL_TASK_INPUT", "{\"q\":1}"),
            ("GREXAL_SIDECAR_SOCKET", "/stale.sock"),
            ("GREXAL_CREDENTIALS_DIR", "/stale-creds"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/x"),
            ("XDG_RUNTIME_DIR", "/run/user/0"),
            ("LANG", "C.UTF-8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
    }

    fn get<'a>(env: &'a [(OsString, EnvValue)], name: &str) -> Option<&'a EnvValue> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn plain(env: &[(OsString, EnvValue)], name: &str) -> Option<String> {
        get(env, name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    #[test]
    fn daemon_config_is_dropped_and_ours_added() {
        let creds = vec![("GITHUB_TOKEN".to_owned(), SecretString::from("s3cret"))];
        let plan = EnvPlan {
            socket: Path::new("/run/grexal/sidecar.sock"),
            credentials_dir: Path::new("/tmp/grexal-elsewhere"),
            browser_cdp_url: Some("http://127.0.0.1:9222"),
            credentials: &creds,
            user: None,
        };
        let env = build_env(base(), &plan).expect("env");
        for gone in [
            "GREXAL_SANDBOX_KEY",
            "GREXAL_CONTROL_TOKEN_FILE",
            "GREXAL_SOME_FUTURE_OPTION",
            "NOTIFY_SOCKET",
            "CREDENTIALS_DIRECTORY",
        ] {
            assert!(get(&env, gone).is_none(), "{gone} passed");
        }
        assert_eq!(
            plain(&env, "GREXAL_TASK_INPUT").as_deref(),
            Some("{\"q\":1}")
        );
        assert_eq!(
            plain(&env, "GREXAL_SIDECAR_SOCKET").as_deref(),
            Some("/run/grexal/sidecar.sock")
        );
        // The root the files are really under, not the daemon's own setting's value.
        assert_eq!(
            plain(&env, "GREXAL_CREDENTIALS_DIR").as_deref(),
            Some("/tmp/grexal-elsewhere")
        );
        assert_eq!(
            plain(&env, "GREXAL_BROWSER_CDP_URL").as_deref(),
            Some("http://127.0.0.1:9222")
        );
        assert_eq!(plain(&env, "HOME").as_deref(), Some("/root"));
        assert_eq!(
            plain(&env, "XDG_RUNTIME_DIR").as_deref(),
            Some("/run/user/0")
        );
        assert!(matches!(
            get(&env, "GITHUB_TOKEN"),
            Some(EnvValue::Secret(_))
        ));
        assert_eq!(plain(&env, "GITHUB_TOKEN").as_deref(), Some("s3cret"));
        assert_eq!(
            env.iter()
                .filter(|(n, _)| n == "GREXAL_SIDECAR_SOCKET")
                .count(),
            1
        );
        assert!(!format!("{env:?}").contains("s3cret"));
        assert!(!format!("{env:?}").contains("/root"));
    }

    #[test]
    fn switching_user_sets_identity_and_wins_over_credentials() {
        let user = AgentUser {
            uid: 1000,
            gid: 1000,
            name: "agent".into(),
            home: PathBuf::from("/var/lib/grexal/agent"),
            groups: vec![1000],
        };
        let creds = vec![
            ("HOME".to_owned(), SecretString::from("/evil")),
            ("API_KEY".to_owned(), SecretString::from("k")),
        ];
        let plan = EnvPlan {
            socket: Path::new("/s.sock"),
            credentials_dir: Path::new("/c"),
            browser_cdp_url: None,
            credentials: &creds,
            user: Some(&user),
        };
        let env = build_env(base(), &plan).expect("env");
        assert_eq!(
            plain(&env, "HOME").as_deref(),
            Some("/var/lib/grexal/agent")
        );
        assert_eq!(plain(&env, "USER").as_deref(), Some("agent"));
        assert_eq!(plain(&env, "LOGNAME").as_deref(), Some("agent"));
        assert!(get(&env, "XDG_RUNTIME_DIR").is_none());
        assert!(get(&env, "GREXAL_BROWSER_CDP_URL").is_none());
        assert_eq!(plain(&env, "API_KEY").as_deref(), Some("k"));
    }

    #[test]
    fn unusable_credential_names_and_values_are_refused() {
        for (name, value) in [
            ("", "v"),
            ("A=B", "v"),
            ("A\0B", "v"),
            ("OK_NAME", "nul\0inside"),
        ] {
            let creds = vec![(name.to_owned(), SecretString::from(value))];
            let plan = EnvPlan {
                socket: Path::new("/s"),
                credentials_dir: Path::new("/c"),
                browser_cdp_url: None,
                credentials: &creds,
                user: None,
            };
            match build_env(Vec::new(), &plan) {
                Err(AgentError::InvalidEnv { name: got }) => assert_eq!(got, name),
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }
}
