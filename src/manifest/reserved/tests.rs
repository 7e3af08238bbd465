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

/// Accepted by the rule and by the manifest.
fn assert_accepted(name: &str) {
    assert_eq!(is_reserved_env_var(name), None, "{name}");
    with_env_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// The second review's names (tests/data/steering-env-names.txt, which tests/check_cli.rs
/// runs through the binary too): each one passed `check`, and each decides which program,
/// library or startup code the agent runs, or where its traffic goes and whom it trusts.
fn second_review() -> Vec<&'static str> {
    let names: Vec<_> = include_str!("../../../tests/data/steering-env-names.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert_eq!(names.len(), 35, "the review listed 35 names");
    names
}

#[test]
fn the_second_reviews_names_are_refused() {
    for name in second_review() {
        assert!(is_reserved_env_var(name).is_some(), "{name}");
        assert_refused(name);
    }
}

/// The names below are written out a second time on purpose: one dropped from a list
/// is refused no more and fails here, and one added to a list must be added here too
/// (the loop over the lists says so), and be refused.
#[test]
fn names_that_steer_startup_are_refused_by_the_manifest() {
    let pinned = [
        // The first review's: each one passed, and PYTHONWARNINGS with BROWSER ran a shell
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
        "GIT_PROXY_COMMAND",
        "GIT_SSL_CAINFO",
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
        "XDG_CONFIG_DIRS",
        "XDG_DATA_DIRS",
        "XDG_RUNTIME_DIR",
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
        "https_proxy",
        "no_proxy",
        "complus_profilerpath",
        // The credential exception does not reach the loader, the platform, the module
        // loaders or pip.
        "LD_TOKEN",
        "GREXAL_API_KEY",
        "DOTNET_API_KEY",
        "PIP_INDEX_TOKEN",
        // The families the second review added, beyond its own names.
        "GTK_PATH",
        "GTK2_RC_FILES",
        "GTK3_MODULES",
        "GIO_MODULE_DIR",
        "GDK_PIXBUF_MODULE_FILE",
        "GST_PLUGIN_PATH",
        "GST_PLUGIN_SCANNER",
        "QT_QPA_PLATFORM_PLUGIN_PATH",
        "QML_IMPORT_PATH",
        "QML2_IMPORT_PATH",
        "LUA_INIT",
        "LUA_PATH",
        "DOTNET_ADDITIONAL_DEPS",
        "CORECLR_ENABLE_PROFILING",
        "COMPlus_EnableDiagnostics",
        "R_PROFILE",
        "R_ENVIRON_USER",
        "R_LIBS_USER",
        "GUILE_LOAD_PATH",
        "ERL_LIBS",
        "ERL_AFLAGS",
        "JULIA_LOAD_PATH",
        "JULIA_DEPOT_PATH",
        "PIP_CERT",
        "PIP_EXTRA_INDEX_URL",
        "CGO_ENABLED",
        "CGO_LDFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_DIST_SERVER",
        "PKG_CONFIG_PATH",
        "SSL_CERT_DIR",
        "CARGO_HOME",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
        "CARGO_REGISTRIES_CRATES_IO_CREDENTIAL_PROVIDER",
        "CARGO_HTTP_PROXY",
        "UV_PYTHON",
        "UV_DEFAULT_INDEX",
        "YARN_NPM_REGISTRY_SERVER",
        "GRADLE_USER_HOME",
        "MAVEN_ARGS",
        "MAVEN_HOME",
        "SBT_CREDENTIALS",
        "CLOUDSDK_PYTHON",
        "FTP_PROXY",
        "SOCKS_PROXY",
        "NO_PROXY",
        "AWS_CA_BUNDLE",
        "JAVA_OPTS",
        "ASAN_OPTIONS",
        "ELIXIR_ERL_OPTIONS",
        "CFLAGS",
        "LDFLAGS",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "MFLAGS",
        "GNUMAKEFLAGS",
        "GOPATH",
        "GOROOT",
        "GOBIN",
        "GOENV",
        "GOTOOLCHAIN",
        "GOPRIVATE",
        "GONOSUMDB",
        "GONOSUMCHECK",
        "GOINSECURE",
        "GOEXPERIMENT",
        "GOCACHE",
        "GOCACHEPROG",
        "GOMODCACHE",
        "GOSUMDB",
        "GOWORK",
        "GOOS",
        "GOARCH",
        "GOAUTH",
        "GO111MODULE",
        // Every other exact name of the lists.
        "MANPAGER",
        "LESS",
        "SSH_ASKPASS",
        "SUDO_ASKPASS",
        "SUDO_EDITOR",
        "FCEDIT",
        "SVN_EDITOR",
        "HGEDITOR",
        "TERMINAL",
        "SVN_SSH",
        "RSYNC_RSH",
        "RSYNC_CONNECT_PROG",
        "CVS_RSH",
        "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES",
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
        "USER",
        "LOGNAME",
        "SHELL",
        "PWD",
        "CDPATH",
        "GLOBIGNORE",
        "PS1",
        "PS2",
        "PS3",
        "INPUTRC",
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
        "PHP_INI_SCAN_DIR",
        "TCL_LIBRARY",
        "TK_LIBRARY",
        "GI_TYPELIB_PATH",
        "GEMRC",
        "KUBECONFIG",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "DOCKER_CONFIG",
        "BOTO_CONFIG",
        "WAYLAND_DISPLAY",
        "DBUS_SESSION_BUS_ADDRESS",
        "DBUS_SYSTEM_BUS_ADDRESS",
        "DOCKER_HOST",
        "SSLKEYLOGFILE",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
        // The third review's: each one passed (CONFIG_SITE is the default name of a
        // connection `config`'s field `site`), and each runs a program or script of the
        // value's choosing, or decides whom TLS trusts.
        "CONFIG_SITE",
        "COMPILER_PATH",
        "GCC_EXEC_PREFIX",
        "HTTPLIB2_CA_CERTS",
        "DENO_CERT",
        "SYSTEMD_PAGER",
        "SYSTEMD_EDITOR",
    ];
    let second_review = second_review();
    for name in pinned.iter().chain(&second_review) {
        assert_refused(name);
    }
    let pinned_anywhere = |name: &str| pinned.contains(&name) || second_review.contains(&name);
    // Every entry of the lists, in either case, is refused too, and is pinned above.
    for &name in PROGRAM_NAMES
        .iter()
        .chain(TOOLCHAIN_NAMES)
        .chain(STARTUP_NAMES)
        .chain(TRAFFIC_NAMES)
    {
        assert!(
            pinned_anywhere(name),
            "{name} is in a list but not pinned here"
        );
        assert_refused(name);
        assert_refused(&name.to_ascii_lowercase());
    }
    let all_pinned = || pinned.iter().chain(&second_review);
    for &(prefix, _) in ABSOLUTE_FAMILIES.iter().chain(TOOL_FAMILIES) {
        assert!(
            all_pinned().any(|n| n.to_ascii_uppercase().starts_with(prefix)),
            "no name of the {prefix}* family is pinned here"
        );
        assert_refused(&format!("{prefix}ANYTHING"));
        assert_refused(&format!("{prefix}ANYTHING").to_ascii_lowercase());
    }
    for &(prefix, _) in ABSOLUTE_FAMILIES {
        assert_refused(&format!("{prefix}ANY_TOKEN"));
        assert_refused(&format!("{prefix}ANY_PASSWORD"));
    }
    for &(suffix, _) in SUFFIX_FAMILIES {
        assert!(
            all_pinned().any(|n| n.to_ascii_uppercase().ends_with(suffix)),
            "no name of the *{suffix} family is pinned here"
        );
        assert_refused(&format!("ANYTHING{suffix}"));
        assert_refused(&format!("ANYTHING{suffix}").to_ascii_lowercase());
    }
}

#[test]
fn credential_names_pass() {
    for name in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "GITLAB_TOKEN",
        "NODE_AUTH_TOKEN",
        "NPM_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "GOOGLE_API_KEY",
        "GOOGLE_CLIENT_SECRET",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOCARDLESS_ACCESS_TOKEN",
        "GODADDY_API_KEY",
        "GO_API_KEY",
        "STRIPE_SECRET_KEY",
        "SLACK_BOT_TOKEN",
        "TWILIO_AUTH_TOKEN",
        "SENDGRID_API_KEY",
        "PIPEDRIVE_API_TOKEN",
        "UVICORN_SECRET",
        "QTUM_KEY",
        "MAKE_API_KEY",
        "CC_API_KEY",
        "DISPLAY_NAME",
        "PROXYCURL_API_KEY",
        "SCRAPER_PROXY_URL",
        "BRIGHTDATA_PROXY_PASSWORD",
        "X_HTTPPROXY",
        "DOCKER_USERNAME",
        "DOCKER_PASSWORD",
        "GIT_TOKEN",
        "GIT_PASSWORD",
        "PYTHONANYWHERE_API_TOKEN",
        "RUBYGEMS_API_KEY",
        "GEM_HOST_API_KEY",
        "PERLEGO_SECRET",
        "SSH_PRIVATE_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "PGPASSWORD",
        "path_to_nothing",
        // The tool families' own credentials.
        "CARGO_REGISTRY_TOKEN",
        "CARGO_REGISTRIES_MY_REGISTRY_TOKEN",
        "CARGO_REGISTRY_SECRET_KEY",
        "UV_PUBLISH_TOKEN",
        "UV_PUBLISH_PASSWORD",
        "YARN_NPM_AUTH_TOKEN",
        "GRADLE_ENTERPRISE_ACCESS_KEY",
        "MAVEN_PASSWORD",
    ] {
        assert_accepted(name);
    }
}

/// Connections as agents declare them, every field under its default name: none is refused.
#[test]
fn default_names_of_typical_connections_pass() {
    let typical = [
        ("openai", "api_key", "OPENAI_API_KEY"),
        ("anthropic", "apiKey", "ANTHROPIC_API_KEY"),
        ("github", "token", "GITHUB_TOKEN"),
        ("stripe", "secret_key", "STRIPE_SECRET_KEY"),
        ("google", "api_key", "GOOGLE_API_KEY"),
        ("aws", "access_key_id", "AWS_ACCESS_KEY_ID"),
        ("aws", "secretAccessKey", "AWS_SECRET_ACCESS_KEY"),
        ("aws", "region", "AWS_REGION"),
        ("database", "url", "DATABASE_URL"),
        ("postgres", "password", "POSTGRES_PASSWORD"),
        ("smtp", "username", "SMTP_USERNAME"),
        ("slack", "bot_token", "SLACK_BOT_TOKEN"),
        ("twilio", "account_sid", "TWILIO_ACCOUNT_SID"),
        ("gocardless", "access_token", "GOCARDLESS_ACCESS_TOKEN"),
        ("proxy", "url", "PROXY_URL"),
        ("make", "api_key", "MAKE_API_KEY"),
        ("docker", "password", "DOCKER_PASSWORD"),
        ("git", "token", "GIT_TOKEN"),
        ("cargo", "registry_token", "CARGO_REGISTRY_TOKEN"),
    ];
    for (id, field, want) in typical {
        assert_eq!(crate::manifest::default_env_var(id, field), want);
        let doc = serde_json::json!({"connections": [{
            "id": id, "display_name": "D", "auth_mode": "secret_input", "delivery": "env",
            "fields": [{"name": field, "label": "L", "secret": true}]}]});
        Manifest::parse(doc.to_string().as_bytes()).unwrap_or_else(|e| panic!("{want}: {e}"));
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

/// Each kind of rule gives its own reason.
#[test]
fn reasons_name_the_rule() {
    for (name, reason) in [
        ("HTTPS_PROXY", "through a proxy"),
        ("REQUESTS_CA_BUNDLE", "certificate authorities"),
        ("SSL_CERT_FILE", "certificate authorities"),
        ("GRADLE_OPTS", "GRADLE_* variables"),
        ("SBT_OPTS", "SBT_* variables"),
        ("KOTLIN_OPTS", "how a program starts"),
        ("CFLAGS", "compilers and build tools"),
        ("GOPROXY", "Go toolchain"),
        ("CC", "compiler or build tool"),
        ("DISPLAY", "traffic"),
        ("CURL_HOME", "starts"),
        ("DOTNET_STARTUP_HOOKS", ".NET runtime"),
    ] {
        let why = is_reserved_env_var(name).unwrap_or_else(|| panic!("{name} passed"));
        assert!(why.contains(reason), "{name}: {why}");
    }
}
