//! The env names a connection may not set.
//!
//! A field's value comes from the user, its name from the agent's developer. The rule: a
//! user-supplied value must never decide which programs, libraries or startup code the
//! agent runs, or who it is. Whole families are refused by prefix, because the programs
//! behind them keep adding variables (`PYTHONWARNINGS` can import a module named in it,
//! which with `BROWSER` runs a shell command; Python alone reads dozens of `PYTHON*`
//! names), and an exact list always lags.
//!
//! Names are compared upper-cased: npm reads `npm_config_*` in any case, and nothing
//! legitimate needs a lower-case spelling of a refused name.
//!
//! In the interpreter and tool families, a name whose last word marks a credential
//! (`_TOKEN`, `_KEY`, `_SECRET`, `_PASSWORD`) is allowed: `NODE_AUTH_TOKEN` is the
//! variable npm's `.npmrc` conventionally reads its registry token from, and a connection
//! named `git`, `node` or `pythonanywhere` gets such names by default (`GIT_TOKEN`). None
//! of these programs reads a variable so named as a command, a path or an option. The
//! platform's, the loader's and the C library's families have no such exception.

/// Families refused whatever follows the prefix, with the reason.
const ABSOLUTE_FAMILIES: &[(&str, &str)] = &[
    (
        "GREXAL_",
        "names starting with GREXAL_ are reserved for the platform",
    ),
    ("LD_", "LD_* variables control the dynamic loader"),
    ("DYLD_", "DYLD_* variables control the dynamic loader"),
    (
        "GCONV_",
        "GCONV_* variables make the C library load modules",
    ),
    ("GLIBC_", "GLIBC_* variables tune the C library"),
    ("MALLOC_", "MALLOC_* variables tune the C library"),
];

/// Families refused unless the name ends in a credential word (see the module's doc).
const TOOL_FAMILIES: &[(&str, &str)] = &[
    ("PYTHON", "PYTHON* variables control the Python interpreter"),
    ("NODE_", "NODE_* variables control Node.js"),
    ("NPM_CONFIG_", "NPM_CONFIG_* variables configure npm"),
    ("PERL", "PERL* variables control the Perl interpreter"),
    ("RUBY", "RUBY* variables control the Ruby interpreter"),
    ("JAVA_", "JAVA_* variables control the Java runtime"),
    ("_JAVA_", "_JAVA_* variables control the Java runtime"),
    (
        "GIT_",
        "GIT_* variables configure git and the programs it runs",
    ),
    ("BASH", "BASH* variables control bash's startup"),
];

/// The last words that mark a credential in a tool family.
const CREDENTIAL_SUFFIXES: &[&str] = &["_TOKEN", "_KEY", "_SECRET", "_PASSWORD"];

/// Names of programs that other programs run (a browser, an editor, a pager, an askpass).
const PROGRAM_NAMES: &[&str] = &[
    "BROWSER",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "MANPAGER",
    "LESS",
    "LESSOPEN",
    "LESSCLOSE",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
];

/// Single names that decide how the process, its shell, its C library or a runtime
/// starts, or who it is. The C library's are those glibc itself ignores in setuid
/// programs (its `UNSECURE_ENVVARS`).
const STARTUP_NAMES: &[&str] = &[
    // Who the agent is and where it looks for programs and dotfiles.
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "XDG_CONFIG_HOME",
    "XDG_CONFIG_DIRS",
    // Shells.
    "IFS",
    "ENV",
    "CDPATH",
    "GLOBIGNORE",
    "PROMPT_COMMAND",
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "SHELLOPTS",
    "ZDOTDIR",
    // The C library.
    "TMPDIR",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TZDIR",
    // Libraries and runtimes that load code named by a variable.
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    "CLASSPATH",
    "JDK_JAVA_OPTIONS",
    "GEM_HOME",
    "GEM_PATH",
    "BUNDLE_GEMFILE",
];

/// Why a connection may not set the env var `name`, or `None` when it may.
pub fn is_reserved_env_var(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let name = upper.as_str();
    if let Some((_, why)) = ABSOLUTE_FAMILIES.iter().find(|(p, _)| name.starts_with(p)) {
        return Some(why);
    }
    if let Some((_, why)) = TOOL_FAMILIES.iter().find(|(p, _)| name.starts_with(p)) {
        let credential = CREDENTIAL_SUFFIXES.iter().any(|s| name.ends_with(s));
        return (!credential).then_some(why);
    }
    if PROGRAM_NAMES.contains(&name) {
        return Some("it names a program that the agent's tools run");
    }
    if STARTUP_NAMES.contains(&name) {
        return Some("it controls how the agent's process starts");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Manifest, ManifestError};

    /// A manifest with one env-delivered field named `name`.
    fn with_env_name(name: &str) -> Result<Manifest, ManifestError> {
        let doc = serde_json::json!({"connections": [{
            "id": "tool", "display_name": "Tool", "auth_mode": "secret_input", "delivery": "env",
            "fields": [{"name": "v", "label": "V", "secret": true, "env_var": name}]}]});
        Manifest::parse(doc.to_string().as_bytes())
    }

    /// Refused by the manifest, naming the field and the name.
    fn assert_refused(name: &str) {
        match with_env_name(name) {
            Err(ManifestError::Invalid { location, problem }) => {
                assert_eq!(
                    location, "connections[0] (id \"tool\").fields[0].env_var",
                    "{name}"
                );
                assert!(
                    problem.starts_with(&format!("env name {name:?} is not allowed: ")),
                    "{name}: {problem}"
                );
            }
            other => panic!("{name}: expected Invalid, got {other:?}"),
        }
    }

    /// The names below are written out a second time on purpose: one dropped from a list
    /// is refused no more and fails here, and one added to a list must be added here too
    /// (the loop over the lists says so), and be refused.
    #[test]
    fn names_that_steer_startup_are_refused_by_the_manifest() {
        let pinned = [
            // The reviewer's: each one passed, and PYTHONWARNINGS with BROWSER ran a shell
            // command as the agent.
            "PYTHONWARNINGS",
            "PYTHONINSPECT",
            "BROWSER",
            "GCONV_PATH",
            "GLIBC_TUNABLES",
            "JAVA_TOOL_OPTIONS",
            "_JAVA_OPTIONS",
            "JDK_JAVA_OPTIONS",
            "PERLLIB",
            "RUBYLIB",
            "NODE_EXTRA_CA_CERTS",
            // More of the same families and kinds.
            "PYTHONBREAKPOINT",
            "PYTHON_HISTORY",
            "PERL5DB",
            "PERL_MB_OPT",
            "RUBYGEMS_GEMDEPS",
            "NPM_CONFIG_SCRIPT_SHELL",
            "npm_config_node_options",
            "GIT_SSH_COMMAND",
            "GIT_EXEC_PATH",
            "GIT_CONFIG_COUNT",
            "GIT_CONFIG_KEY_0",
            "GIT_CONFIG_VALUE_0",
            "GIT_ASKPASS",
            "BASH_ENV",
            "BASHOPTS",
            "DYLD_INSERT_LIBRARIES",
            "MALLOC_CHECK_",
            "EDITOR",
            "VISUAL",
            "PAGER",
            "LESSOPEN",
            "LESSCLOSE",
            "PROMPT_COMMAND",
            "PS4",
            "SHELLOPTS",
            "ENV",
            "IFS",
            "OPENSSL_CONF",
            "CLASSPATH",
            "XDG_CONFIG_HOME",
            "ZDOTDIR",
            "LOCPATH",
            // Already refused before, still refused.
            "PATH",
            "HOME",
            "TMPDIR",
            "PYTHONSTARTUP",
            "PYTHONPATH",
            "NODE_OPTIONS",
            "PERL5LIB",
            "PERL5OPT",
            "RUBYOPT",
            "LD_PRELOAD",
            "GREXAL_SIDECAR_SOCKET",
            // Lower case changes nothing.
            "ld_preload",
            "pythonwarnings",
            // The credential exception does not reach the loader or the platform.
            "LD_TOKEN",
            "GREXAL_API_KEY",
            // Every other exact name of the lists.
            "MANPAGER",
            "LESS",
            "SSH_ASKPASS",
            "SUDO_ASKPASS",
            "USER",
            "LOGNAME",
            "SHELL",
            "PWD",
            "XDG_CONFIG_DIRS",
            "CDPATH",
            "GLOBIGNORE",
            "PS1",
            "PS2",
            "PS3",
            "GETCONF_DIR",
            "HOSTALIASES",
            "LOCALDOMAIN",
            "NIS_PATH",
            "NLSPATH",
            "RESOLV_HOST_CONF",
            "RES_OPTIONS",
            "TZDIR",
            "OPENSSL_ENGINES",
            "OPENSSL_MODULES",
            "GEM_HOME",
            "GEM_PATH",
            "BUNDLE_GEMFILE",
        ];
        for name in pinned {
            assert_refused(name);
        }
        // Every entry of the lists, in either case, is refused too, and is pinned above.
        for &name in PROGRAM_NAMES.iter().chain(STARTUP_NAMES) {
            assert!(
                pinned.contains(&name),
                "{name} is in a list but not pinned here"
            );
            assert_refused(name);
            assert_refused(&name.to_ascii_lowercase());
        }
        for &(prefix, _) in ABSOLUTE_FAMILIES.iter().chain(TOOL_FAMILIES) {
            assert!(
                pinned.iter().any(|n| n.starts_with(prefix)),
                "no name of the {prefix}* family is pinned here"
            );
            assert_refused(&format!("{prefix}ANYTHING"));
            assert_refused(&format!("{prefix}ANYTHING").to_ascii_lowercase());
        }
        for &(prefix, _) in ABSOLUTE_FAMILIES {
            assert_refused(&format!("{prefix}ANY_TOKEN"));
        }
    }

    #[test]
    fn credential_names_pass() {
        for name in [
            "OPENAI_API_KEY",
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "NODE_AUTH_TOKEN",
            "NPM_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "GIT_TOKEN",
            "GIT_PASSWORD",
            "PYTHONANYWHERE_API_TOKEN",
            "RUBYGEMS_API_KEY",
            "GEM_HOST_API_KEY",
            "PERLEGO_SECRET",
            "SSH_PRIVATE_KEY",
            "DATABASE_URL",
            "HTTPS_PROXY",
            "PGPASSWORD",
            "path_to_nothing",
        ] {
            assert_eq!(is_reserved_env_var(name), None, "{name}");
            with_env_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn default_names_in_a_tool_family_pass_only_as_credentials() {
        // A connection named `git` gets GIT_TOKEN by default, which passes, and
        // GIT_EDITOR, which does not.
        let doc = serde_json::json!({"connections": [{
            "id": "git", "display_name": "Git", "auth_mode": "secret_input", "delivery": "env",
            "fields": [{"name": "token", "label": "T", "secret": true}]}]});
        let m = Manifest::parse(doc.to_string().as_bytes()).expect("GIT_TOKEN");
        assert_eq!(m.connections.len(), 1);
        let doc = serde_json::json!({"connections": [{
            "id": "git", "display_name": "Git", "auth_mode": "secret_input", "delivery": "env",
            "fields": [{"name": "editor", "label": "E", "secret": false}]}]});
        let err = Manifest::parse(doc.to_string().as_bytes()).expect_err("GIT_EDITOR");
        assert!(err.to_string().contains("GIT_* variables"), "{err}");
    }
}
