//! The env names a connection may not set.
//!
//! A field's value comes from the user, its name from the agent's developer. The rule: a
//! user-supplied value must never decide which programs, libraries or startup code the
//! agent runs, or who it is, or where its traffic goes and whom it trusts. Whole families
//! are refused by prefix or suffix, because the programs behind them keep adding variables
//! (`PYTHONWARNINGS` can import a module named in it, which with `BROWSER` runs a shell
//! command; Python alone reads dozens of `PYTHON*` names), and an exact list always lags.
//!
//! A path is as dangerous as code: a `file_upload` connection puts a file the user chose at
//! a known path (`/tmp/grexal/{id}/{filename}`), so a name whose value is a config file, a
//! startup file or a load path is refused like one whose value is a command.
//!
//! Only env-delivered `secret_input` fields are checked: they are the only env vars whose
//! value the user supplies. The daemon sets the others itself (`GREXAL_*`, `HOME`, ...).
//!
//! Names are compared upper-cased: npm reads `npm_config_*` and curl `http_proxy` in any
//! case, and nothing legitimate needs a lower-case spelling of a refused name.
//!
//! In the interpreter and tool families (`TOOL_FAMILIES`), a name whose last word marks a
//! credential (`_TOKEN`, `_KEY`, `_SECRET`, `_PASSWORD`) is allowed: `NODE_AUTH_TOKEN` is
//! the variable npm's `.npmrc` conventionally reads its registry token from,
//! `CARGO_REGISTRY_TOKEN` is cargo's own, and a connection named `git`, `node` or
//! `pythonanywhere` gets such names by default (`GIT_TOKEN`). None of these programs reads
//! a variable so named as a command, a path or an option. The other families have no such
//! exception: each says why next to it.

/// Families refused whatever follows the prefix, with the reason.
const ABSOLUTE_FAMILIES: &[(&str, &str)] = &[
    (
        "GREXAL_",
        "names starting with GREXAL_ are reserved for the platform",
    ),
    // The dynamic loader and the C library: every one of theirs is read at every start.
    ("LD_", "LD_* variables control the dynamic loader"),
    ("DYLD_", "DYLD_* variables control the dynamic loader"),
    (
        "GCONV_",
        "GCONV_* variables make the C library load modules",
    ),
    ("GLIBC_", "GLIBC_* variables tune the C library"),
    ("MALLOC_", "MALLOC_* variables tune the C library"),
    // Runtimes' module loaders and startup files: these families exist to point a runtime
    // at code to load or run, and none of their names is a credential.
    ("GTK_", "GTK_* variables make GTK load modules"),
    ("GTK2_", "GTK2_* variables make GTK load modules"),
    ("GTK3_", "GTK3_* variables make GTK load modules"),
    ("GIO_", "GIO_* variables make GLib load modules"),
    (
        "GDK_PIXBUF_",
        "GDK_PIXBUF_* variables make gdk-pixbuf load modules",
    ),
    (
        "GST_PLUGIN_",
        "GST_PLUGIN_* variables make GStreamer load plugins",
    ),
    ("QT_", "QT_* variables make Qt load plugins"),
    ("QML_", "QML_* variables make Qt load QML modules"),
    ("QML2_", "QML2_* variables make Qt load QML modules"),
    (
        "LUA_",
        "LUA_* variables set Lua's module paths and startup code",
    ),
    (
        "DOTNET_",
        "DOTNET_* variables control the .NET runtime (startup hooks, host paths)",
    ),
    (
        "CORECLR_",
        "CORECLR_* variables make the .NET runtime load a profiler",
    ),
    ("COMPLUS_", "COMPLUS_* variables configure the .NET runtime"),
    ("R_PROFILE", "R_PROFILE* variables name R's startup code"),
    ("R_ENVIRON", "R_ENVIRON* variables name R's startup files"),
    ("R_LIBS", "R_LIBS* variables set R's library path"),
    ("GUILE_", "GUILE_* variables set Guile's load path"),
    (
        "ERL_",
        "ERL_* variables set Erlang's code path and start options",
    ),
    (
        "JULIA_",
        "JULIA_* variables set Julia's load path and package server",
    ),
    // Toolchains none of whose names is a credential. pip reads every PIP_<OPTION> as its
    // command-line option, so a name's last word says nothing about its use (and pip's
    // credentials go in the index URL or the keyring, never a PIP_*_TOKEN).
    (
        "PIP_",
        "PIP_* variables set pip's options (the package index, its config file)",
    ),
    ("CGO_", "CGO_* variables set the C compiler Go runs"),
    (
        "RUSTC_",
        "RUSTC_* variables name a wrapper cargo runs around the Rust compiler",
    ),
    (
        "RUSTUP_",
        "RUSTUP_* variables decide which Rust toolchain runs and where it is downloaded from",
    ),
    (
        "PKG_CONFIG_",
        "PKG_CONFIG_* variables decide the compiler and linker flags builds use",
    ),
    // Where programs find their config, their data (which program opens a file: .desktop
    // handlers) and their runtime sockets.
    (
        "XDG_",
        "XDG_* variables decide where programs find their config, data and sockets",
    ),
    // Trust: a certificate authority of the user's would let them read the agent's TLS.
    (
        "SSL_CERT_",
        "SSL_CERT_* variables decide which certificate authorities TLS trusts",
    ),
];

/// Families refused unless the name ends in a credential word (see the module's doc): each
/// has credentials among its names (`NODE_AUTH_TOKEN`, `CARGO_REGISTRY_TOKEN`,
/// `UV_PUBLISH_TOKEN`, `YARN_NPM_AUTH_TOKEN`, `GRADLE_ENTERPRISE_ACCESS_KEY`), or is a
/// connection's likely id (`git`), and none reads a name so ending as a command, a path or
/// an option.
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
    (
        "CARGO_",
        "CARGO_* variables configure cargo (the compiler, wrappers and linkers it runs)",
    ),
    (
        "UV_",
        "UV_* variables configure uv (the package index, the Python it runs)",
    ),
    (
        "YARN_",
        "YARN_* variables configure Yarn (YARN_YARN_PATH names the Yarn it runs)",
    ),
    (
        "GRADLE_",
        "GRADLE_* variables configure Gradle (its JVM options, its init scripts)",
    ),
    (
        "MAVEN_",
        "MAVEN_* variables configure Maven (its JVM options, the Maven it runs)",
    ),
    ("SBT_", "SBT_* variables configure sbt (its JVM options)"),
    (
        "CLOUDSDK_",
        "CLOUDSDK_* variables configure gcloud (CLOUDSDK_PYTHON names the Python it runs)",
    ),
];

/// The last words that mark a credential in a tool family.
const CREDENTIAL_SUFFIXES: &[&str] = &["_TOKEN", "_KEY", "_SECRET", "_PASSWORD"];

/// Families refused by their last word. No name so ending is a credential, so there is no
/// exception to make.
const SUFFIX_FAMILIES: &[(&str, &str)] = &[
    // curl reads `{scheme}_proxy` for every scheme it speaks, and `NO_PROXY`; Go, Python,
    // Node.js libraries and git read the common ones.
    (
        "_PROXY",
        "*_PROXY variables send the agent's traffic through a proxy",
    ),
    // requests, curl, the AWS SDKs.
    (
        "_CA_BUNDLE",
        "*_CA_BUNDLE variables decide which certificate authorities TLS trusts",
    ),
    // httplib2, Node.js (NODE_EXTRA_CA_CERTS, also a NODE_ name).
    (
        "_CA_CERTS",
        "*_CA_CERTS variables decide which certificate authorities TLS trusts",
    ),
    // A JVM's, a build tool's or a sanitizer's start options (JAVA_OPTS, GRADLE_OPTS,
    // ASAN_OPTIONS, ELIXIR_ERL_OPTIONS): an option can load an agent or run code.
    ("_OPTS", "*_OPTS variables set how a program starts"),
    ("_OPTIONS", "*_OPTIONS variables set how a program starts"),
    // Compiler and build flags (CFLAGS, LDFLAGS, RUSTFLAGS, MAKEFLAGS, GOFLAGS, ERL_FLAGS):
    // a flag can load a plugin, link a library or run a program.
    (
        "FLAGS",
        "*FLAGS variables add options to compilers and build tools",
    ),
];

/// Names of programs that other programs run (a browser, an editor, a pager, an askpass,
/// a remote shell), or that let a library run one.
const PROGRAM_NAMES: &[&str] = &[
    "BROWSER",
    "EDITOR",
    "VISUAL",
    "SUDO_EDITOR",
    "FCEDIT",
    "SVN_EDITOR",
    "HGEDITOR",
    "TERMINAL",
    "PAGER",
    "MANPAGER",
    // systemd's tools run these instead of PAGER and EDITOR.
    "SYSTEMD_PAGER",
    "SYSTEMD_EDITOR",
    "LESS",
    "LESSOPEN",
    "LESSCLOSE",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    "SVN_SSH",
    "RSYNC_RSH",
    "RSYNC_CONNECT_PROG",
    "CVS_RSH",
    // Lets Google's auth libraries run the command a credential file names.
    "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES",
];

/// The compilers and build tools that build tools run (`make`, `configure`, the `cc`
/// crate, node-gyp, cgo, cargo), and the makefiles `make` reads before any other.
const TOOLCHAIN_NAMES: &[&str] = &[
    "CC",
    "CXX",
    "CPP",
    "LD",
    "AR",
    "AS",
    "NM",
    "RANLIB",
    "STRIP",
    "OBJCOPY",
    "OBJDUMP",
    "FC",
    "MAKE",
    "MAKEFILES",
    "GCCGO",
    "PKG_CONFIG",
    "RUSTC",
    "RUSTDOC",
    // Where gcc looks for the programs it runs (cc1, as, collect2).
    "COMPILER_PATH",
    "GCC_EXEC_PREFIX",
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
    // Shells and readline.
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
    "INPUTRC",
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
    // A shell script every autoconf `configure` sources.
    "CONFIG_SITE",
    // Libraries and runtimes that load code named by a variable.
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    "CLASSPATH",
    "JDK_JAVA_OPTIONS",
    "GEM_HOME",
    "GEM_PATH",
    "BUNDLE_GEMFILE",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "TCLLIBPATH",
    "TCL_LIBRARY",
    "TK_LIBRARY",
    "EMACSLOADPATH",
    "GI_TYPELIB_PATH",
    // Config files that can name a command to run (hgrc hooks, kubeconfig's exec plugins,
    // AWS's credential_process, Docker's credential helpers, boto's plugin directory) or
    // the servers and options a tool uses (curlrc, wgetrc, gemrc).
    "CURL_HOME",
    "WGETRC",
    "HGRCPATH",
    "GEMRC",
    "KUBECONFIG",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "DOCKER_CONFIG",
    "BOTO_CONFIG",
];

/// Where the agent's traffic goes and what it trusts: the display and the agents and buses
/// its tools talk to (whoever answers gets its keystrokes, its SSH signatures, its
/// container commands), TLS trust and key logging.
const TRAFFIC_NAMES: &[&str] = &[
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "SSH_AUTH_SOCK",
    "DBUS_SESSION_BUS_ADDRESS",
    "DBUS_SYSTEM_BUS_ADDRESS",
    "DOCKER_HOST",
    "SSLKEYLOGFILE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    // Deno's extra CA certificates.
    "DENO_CERT",
];

/// The Go toolchain's names: `GO` and a word without an underscore (`GOFLAGS`, `GOPROXY`,
/// `GOTOOLCHAIN`, which downloads and runs another Go, `GOAUTH` and `GOCACHEPROG`, which run
/// commands, `GO111MODULE`). A `GO_` or `GOOGLE_` prefix would be wrong: default names
/// always hold an underscore (`GOOGLE_API_KEY`, `GOCARDLESS_ACCESS_TOKEN`), Go's never do.
fn is_go_tool_name(name: &str) -> bool {
    name.len() > 2 && name.starts_with("GO") && !name.contains('_')
}

/// Why a connection may not set the env var `name`, or `None` when it may.
pub fn is_reserved_env_var(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let name = upper.as_str();
    if let Some((_, why)) = ABSOLUTE_FAMILIES.iter().find(|(p, _)| name.starts_with(p)) {
        return Some(why);
    }
    if let Some((_, why)) = TOOL_FAMILIES.iter().find(|(p, _)| name.starts_with(p)) {
        // No suffix family's word is a credential word, nor any exact name, so the
        // exception cannot let one of those through.
        let credential = CREDENTIAL_SUFFIXES.iter().any(|s| name.ends_with(s));
        return (!credential).then_some(why);
    }
    if let Some((_, why)) = SUFFIX_FAMILIES.iter().find(|(s, _)| name.ends_with(s)) {
        return Some(why);
    }
    if is_go_tool_name(name) {
        return Some("GO* names without an underscore configure the Go toolchain");
    }
    if PROGRAM_NAMES.contains(&name) {
        return Some("it names a program that the agent's tools run");
    }
    if TOOLCHAIN_NAMES.contains(&name) {
        return Some("it names a compiler or build tool that the agent's tools run");
    }
    if STARTUP_NAMES.contains(&name) {
        return Some("it controls how the agent's process starts");
    }
    if TRAFFIC_NAMES.contains(&name) {
        return Some("it decides where the agent's traffic goes or what it trusts");
    }
    None
}

#[cfg(test)]
mod tests;
