//! Table-driven tests for every manifest rule.

use super::*;
use serde_json::json;

fn parse(v: Value) -> Result<Manifest, ManifestError> {
    Manifest::parse(v.to_string().as_bytes())
}

fn secret_conn(id: &str, fields: Value, delivery: Option<&str>) -> Value {
    let mut c =
        json!({"id": id, "display_name": "D", "auth_mode": "secret_input", "fields": fields});
    if let Some(d) = delivery {
        c["delivery"] = json!(d);
    }
    c
}

fn field(name: &str) -> Value {
    json!({"name": name, "label": "L", "secret": true})
}

fn field_env(name: &str, env: &str) -> Value {
    json!({"name": name, "label": "L", "secret": true, "env_var": env})
}

fn with_conns(conns: Vec<Value>) -> Value {
    json!({"manifest_version": 1, "connections": conns})
}

#[test]
fn full_manifest_parses_and_ignores_unknown_keys() {
    let doc = json!({
        "manifest_version": "1",
        "entrypoint": "main.py",
        "input_schema": {"type": "object"},
        "runtime": {"language": "python", "memory_mb": 512, "sandbox_template": "desktop", "extra": 1},
        "connections": [
            {"id": "open-ai", "display_name": "OpenAI", "auth_mode": "secret_input", "icon": "x",
             "fields": [{"name": "apiKey", "label": "API key", "secret": true, "hint": "sk-"}],
             "delivery": "env"},
            {"id": "google", "display_name": "Google", "auth_mode": "oauth_redirect",
             "provider": {"auth_url": "https://a", "token_url": "https://t", "scopes": ["email"], "pkce": true}},
            {"id": "ssh_key", "display_name": "SSH", "auth_mode": "file_upload",
             "accepted_extensions": [".pem", ".tar.gz"], "max_size_bytes": 65536, "description": "key"},
            {"id": "linkedin", "display_name": "LinkedIn", "auth_mode": "browser_login",
             "login_url": "https://www.linkedin.com/login"},
        ]
    });
    let m = parse(doc).expect("valid");
    assert!(m.is_desktop());
    assert_eq!(m.connections.len(), 4);
    let AuthMode::SecretInput { fields, delivery } = &m.connection("open-ai").expect("conn").mode
    else {
        panic!("mode")
    };
    assert_eq!(*delivery, Delivery::Env);
    assert_eq!(fields[0].env_var, "OPEN_AI_API_KEY");
    assert_eq!(
        m.connection("ssh_key").expect("conn").mode,
        AuthMode::FileUpload {
            accepted_extensions: vec![".pem".into(), ".tar.gz".into()],
            max_size_bytes: 65536,
            description: Some("key".into())
        }
    );
    assert!(!m
        .connection("linkedin")
        .expect("conn")
        .mode
        .is_pre_collected());
}

#[test]
fn absent_connections_and_runtime_are_empty() {
    let m = Manifest::parse(b"{}").expect("valid");
    assert!(m.connections.is_empty());
    assert_eq!(m.sandbox_template, None);
    assert!(!m.is_desktop());
}

#[test]
fn delivery_defaults_to_runtime_object() {
    let m = parse(with_conns(vec![secret_conn(
        "a",
        json!([field("k")]),
        None,
    )]))
    .expect("valid");
    let AuthMode::SecretInput { delivery, .. } = &m.connections[0].mode else {
        panic!()
    };
    assert_eq!(*delivery, Delivery::RuntimeObject);
}

#[test]
fn default_env_names() {
    let cases = [
        ("open-ai", "apiKey", "OPEN_AI_API_KEY"),
        ("github", "token", "GITHUB_TOKEN"),
        ("aws", "secretAccessKey", "AWS_SECRET_ACCESS_KEY"),
        ("x", "HTTPProxy", "X_HTTPPROXY"),
        ("s3", "key2Id", "S3_KEY2_ID"),
        ("my_db", "pass-word", "MY_DB_PASS_WORD"),
        ("OpenAI", "api_key", "OPEN_AI_API_KEY"),
    ];
    for (id, name, want) in cases {
        assert_eq!(default_env_var(id, name), want, "{id} {name}");
    }
}

#[test]
fn valid_variants() {
    let cases: Vec<(&str, Value)> = vec![
        (
            "id of 64 bytes",
            with_conns(vec![secret_conn(
                &"a".repeat(64),
                json!([field("k")]),
                None,
            )]),
        ),
        (
            "id with _ and digits",
            with_conns(vec![secret_conn("_9-x", json!([field("k")]), None)]),
        ),
        (
            "file delivery",
            with_conns(vec![secret_conn("a", json!([field("k")]), Some("file"))]),
        ),
        (
            "env override",
            with_conns(vec![secret_conn(
                "a",
                json!([field_env("k", "MY_KEY")]),
                Some("env"),
            )]),
        ),
        (
            "same env name under runtime_object",
            with_conns(vec![
                secret_conn("a", json!([field_env("k", "X")]), None),
                secret_conn("b", json!([field_env("k", "X")]), Some("env")),
            ]),
        ),
        (
            "reserved name under file delivery is unused",
            with_conns(vec![secret_conn(
                "a",
                json!([field_env("k", "PATH")]),
                Some("file"),
            )]),
        ),
        (
            "digit id under runtime_object",
            with_conns(vec![secret_conn("1p", json!([field("k")]), None)]),
        ),
        (
            "file_upload without extensions",
            with_conns(vec![json!(
            {"id": "f", "display_name": "F", "auth_mode": "file_upload", "max_size_bytes": 1048576})]),
        ),
        (
            "browser_login without url",
            with_conns(vec![json!(
            {"id": "b", "display_name": "B", "auth_mode": "browser_login"})]),
        ),
        (
            "oauth with empty scopes",
            with_conns(vec![json!({"id": "o", "display_name": "O",
            "auth_mode": "oauth_redirect", "provider": {"auth_url": "u", "token_url": "t", "scopes": []}})]),
        ),
        ("null runtime", json!({"runtime": null})),
    ];
    for (name, doc) in cases {
        if let Err(e) = parse(doc) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn invalid_variants_name_location_and_problem() {
    let oauth = |provider: Value| json!({"id": "o", "display_name": "O", "auth_mode": "oauth_redirect", "provider": provider});
    let upload = |exts: Value, size: Value| {
        json!({"id": "f", "display_name": "F", "auth_mode": "file_upload",
        "accepted_extensions": exts, "max_size_bytes": size})
    };
    let id_conn = |id: Value| json!({"id": id, "display_name": "D", "auth_mode": "browser_login"});
    let ok = secret_conn("ok", json!([field("k")]), None);
    // (case, document, expected location, expected substring of the problem)
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "top level not object",
            json!([1]),
            "(top level)",
            "must be a JSON object",
        ),
        (
            "connections not array",
            json!({"connections": {}}),
            "connections",
            "must be an array",
        ),
        (
            "connection not object",
            with_conns(vec![json!(1)]),
            "connections[0]",
            "must be an object",
        ),
        (
            "id missing",
            with_conns(vec![
                json!({"display_name": "D", "auth_mode": "browser_login"}),
            ]),
            "connections[0].id",
            "is required",
        ),
        (
            "id not string",
            with_conns(vec![id_conn(json!(5))]),
            "connections[0].id",
            "must be a string",
        ),
        (
            "id empty",
            with_conns(vec![id_conn(json!(""))]),
            "connections[0].id",
            "not a valid id",
        ),
        (
            "id dot",
            with_conns(vec![id_conn(json!("."))]),
            "connections[0].id",
            "not a valid id",
        ),
        (
            "id dotdot",
            with_conns(vec![id_conn(json!(".."))]),
            "connections[0].id",
            "not a valid id",
        ),
        (
            "id slash",
            with_conns(vec![id_conn(json!("a/b"))]),
            "connections[0].id",
            "not a valid id",
        ),
        (
            "id NUL",
            with_conns(vec![id_conn(json!("a\u{0}b"))]),
            "connections[0].id",
            "not a valid id",
        ),
        (
            "id unicode",
            with_conns(vec![id_conn(json!("caf\u{e9}"))]),
            "connections[0].id",
            "not a valid id",
        ),
        (
            "id RLO",
            with_conns(vec![id_conn(json!("a\u{202e}b"))]),
            "connections[0].id",
            "not a valid id",
        ),
        (
            "id leading dash",
            with_conns(vec![id_conn(json!("-a"))]),
            "connections[0].id",
            "not a valid id",
        ),
        (
            "id 65 bytes",
            with_conns(vec![id_conn(json!("a".repeat(65)))]),
            "connections[0].id",
            "not a valid id",
        ),
        (
            "id duplicate",
            with_conns(vec![ok.clone(), id_conn(json!("ok"))]),
            "connections[1] (id \"ok\").id",
            "duplicate id, also declared by connections[0]",
        ),
        (
            "display_name missing",
            with_conns(vec![json!({"id": "a", "auth_mode": "browser_login"})]),
            "connections[0] (id \"a\").display_name",
            "is required",
        ),
        (
            "display_name empty",
            with_conns(vec![
                json!({"id": "a", "display_name": " ", "auth_mode": "browser_login"}),
            ]),
            "connections[0] (id \"a\").display_name",
            "must not be empty",
        ),
        (
            "display_name not string",
            with_conns(vec![
                json!({"id": "a", "display_name": 1, "auth_mode": "browser_login"}),
            ]),
            "connections[0] (id \"a\").display_name",
            "must be a string",
        ),
        (
            "auth_mode missing",
            with_conns(vec![json!({"id": "a", "display_name": "A"})]),
            "connections[0] (id \"a\").auth_mode",
            "is required",
        ),
        (
            "auth_mode unknown",
            with_conns(vec![
                json!({"id": "a", "display_name": "A", "auth_mode": "magic_link"}),
            ]),
            "connections[0] (id \"a\").auth_mode",
            "unknown auth_mode \"magic_link\"",
        ),
        (
            "fields missing",
            with_conns(vec![
                json!({"id": "a", "display_name": "A", "auth_mode": "secret_input"}),
            ]),
            "connections[0] (id \"a\").fields",
            "is required",
        ),
        (
            "fields empty",
            with_conns(vec![secret_conn("a", json!([]), None)]),
            "connections[0] (id \"a\").fields",
            "at least one field",
        ),
        (
            "fields not array",
            with_conns(vec![secret_conn("a", json!({}), None)]),
            "connections[0] (id \"a\").fields",
            "must be an array",
        ),
        (
            "field not object",
            with_conns(vec![secret_conn("a", json!(["k"]), None)]),
            "connections[0] (id \"a\").fields[0]",
            "must be an object",
        ),
        (
            "field name missing",
            with_conns(vec![secret_conn(
                "a",
                json!([{"label": "L", "secret": true}]),
                None,
            )]),
            "connections[0] (id \"a\").fields[0].name",
            "is required",
        ),
        (
            "field name dotdot",
            with_conns(vec![secret_conn("a", json!([field("..")]), None)]),
            "connections[0] (id \"a\").fields[0].name",
            "not a valid field name",
        ),
        (
            "field name slash",
            with_conns(vec![secret_conn("a", json!([field("a/b")]), None)]),
            "connections[0] (id \"a\").fields[0].name",
            "not a valid field name",
        ),
        (
            "field name duplicate",
            with_conns(vec![secret_conn(
                "a",
                json!([field("k"), field("x"), field("k")]),
                None,
            )]),
            "connections[0] (id \"a\").fields[2].name",
            "duplicate field name \"k\", also declared by fields[0]",
        ),
        (
            "label missing",
            with_conns(vec![secret_conn(
                "a",
                json!([{"name": "k", "secret": true}]),
                None,
            )]),
            "connections[0] (id \"a\").fields[0].label",
            "is required",
        ),
        (
            "secret missing",
            with_conns(vec![secret_conn(
                "a",
                json!([{"name": "k", "label": "L"}]),
                None,
            )]),
            "connections[0] (id \"a\").fields[0].secret",
            "is required",
        ),
        (
            "secret not bool",
            with_conns(vec![secret_conn(
                "a",
                json!([{"name": "k", "label": "L", "secret": "yes"}]),
                None,
            )]),
            "connections[0] (id \"a\").fields[0].secret",
            "must be a boolean",
        ),
        (
            "delivery unknown",
            with_conns(vec![secret_conn("a", json!([field("k")]), Some("stdin"))]),
            "connections[0] (id \"a\").delivery",
            "unknown delivery \"stdin\"",
        ),
        (
            "env_var syntax",
            with_conns(vec![secret_conn("a", json!([field_env("k", "1X")]), None)]),
            "connections[0] (id \"a\").fields[0].env_var",
            "not a valid env var name",
        ),
        (
            "env_var dash",
            with_conns(vec![secret_conn(
                "a",
                json!([field_env("k", "A-B")]),
                Some("env"),
            )]),
            "connections[0] (id \"a\").fields[0].env_var",
            "not a valid env var name",
        ),
        (
            "env default invalid",
            with_conns(vec![secret_conn("1p", json!([field("k")]), Some("env"))]),
            "connections[0] (id \"1p\").fields[0].env_var",
            "set env_var",
        ),
        (
            "env GREXAL_SIDECAR_SOCKET",
            with_conns(vec![secret_conn(
                "a",
                json!([field_env("k", "GREXAL_SIDECAR_SOCKET")]),
                Some("env"),
            )]),
            "connections[0] (id \"a\").fields[0].env_var",
            "reserved for the platform",
        ),
        (
            "env GREXAL_BROWSER_CDP_URL",
            with_conns(vec![secret_conn(
                "a",
                json!([field_env("k", "GREXAL_BROWSER_CDP_URL")]),
                Some("env"),
            )]),
            "connections[0] (id \"a\").fields[0].env_var",
            "reserved for the platform",
        ),
        (
            "env default GREXAL_",
            with_conns(vec![secret_conn(
                "grexal",
                json!([field("x")]),
                Some("env"),
            )]),
            "connections[0] (id \"grexal\").fields[0].env_var",
            "reserved for the platform",
        ),
        (
            "env PATH",
            with_conns(vec![secret_conn(
                "a",
                json!([field_env("k", "PATH")]),
                Some("env"),
            )]),
            "connections[0] (id \"a\").fields[0].env_var",
            "not allowed",
        ),
        (
            "env LD_PRELOAD",
            with_conns(vec![secret_conn(
                "a",
                json!([field_env("k", "LD_PRELOAD")]),
                Some("env"),
            )]),
            "connections[0] (id \"a\").fields[0].env_var",
            "dynamic loader",
        ),
        (
            "env LD_LIBRARY_PATH",
            with_conns(vec![secret_conn(
                "a",
                json!([field_env("k", "LD_LIBRARY_PATH")]),
                Some("env"),
            )]),
            "connections[0] (id \"a\").fields[0].env_var",
            "dynamic loader",
        ),
        (
            "env HOME",
            with_conns(vec![secret_conn(
                "a",
                json!([field_env("k", "HOME")]),
                Some("env"),
            )]),
            "connections[0] (id \"a\").fields[0].env_var",
            "not allowed",
        ),
        (
            "env USER",
            with_conns(vec![secret_conn(
                "a",
                json!([field_env("k", "USER")]),
                Some("env"),
            )]),
            "connections[0] (id \"a\").fields[0].env_var",
            "not allowed",
        ),
        (
            "env collision across connections",
            with_conns(vec![
                secret_conn("a", json!([field_env("k", "SHARED")]), Some("env")),
                secret_conn(
                    "b",
                    json!([field("x"), field_env("y", "SHARED")]),
                    Some("env"),
                ),
            ]),
            "connections[1] (id \"b\").fields[1].env_var",
            "collides with connections[0] (id \"a\").fields[0]",
        ),
        (
            "env collision default vs override",
            with_conns(vec![
                secret_conn("a-b", json!([field("c")]), Some("env")),
                secret_conn("a", json!([field_env("k", "A_B_C")]), Some("env")),
            ]),
            "connections[1] (id \"a\").fields[0].env_var",
            "collides with connections[0] (id \"a-b\").fields[0]",
        ),
        (
            "env collision within connection",
            with_conns(vec![secret_conn(
                "a",
                json!([field("bC"), field("b_c")]),
                Some("env"),
            )]),
            "connections[0] (id \"a\").fields[1].env_var",
            "collides with connections[0] (id \"a\").fields[0]",
        ),
        (
            "provider missing",
            with_conns(vec![
                json!({"id": "o", "display_name": "O", "auth_mode": "oauth_redirect"}),
            ]),
            "connections[0] (id \"o\").provider",
            "is required",
        ),
        (
            "provider not object",
            with_conns(vec![oauth(json!("x"))]),
            "connections[0] (id \"o\").provider",
            "must be an object",
        ),
        (
            "auth_url missing",
            with_conns(vec![oauth(json!({"token_url": "t", "scopes": []}))]),
            "connections[0] (id \"o\").provider.auth_url",
            "is required",
        ),
        (
            "token_url missing",
            with_conns(vec![oauth(json!({"auth_url": "a", "scopes": []}))]),
            "connections[0] (id \"o\").provider.token_url",
            "is required",
        ),
        (
            "scopes missing",
            with_conns(vec![oauth(json!({"auth_url": "a", "token_url": "t"}))]),
            "connections[0] (id \"o\").provider.scopes",
            "is required",
        ),
        (
            "scope not string",
            with_conns(vec![oauth(
                json!({"auth_url": "a", "token_url": "t", "scopes": ["a", 1]}),
            )]),
            "connections[0] (id \"o\").provider.scopes[1]",
            "must be a string",
        ),
        (
            "extension without dot",
            with_conns(vec![upload(json!(["pem"]), json!(10))]),
            "connections[0] (id \"f\").accepted_extensions[0]",
            "not an extension",
        ),
        (
            "extension bare dot",
            with_conns(vec![upload(json!(["."]), json!(10))]),
            "connections[0] (id \"f\").accepted_extensions[0]",
            "not an extension",
        ),
        (
            "extension with slash",
            with_conns(vec![upload(json!([".pem", "./x"]), json!(10))]),
            "connections[0] (id \"f\").accepted_extensions[1]",
            "not an extension",
        ),
        (
            "extensions not array",
            with_conns(vec![upload(json!(".pem"), json!(10))]),
            "connections[0] (id \"f\").accepted_extensions",
            "must be an array",
        ),
        (
            "max size zero",
            with_conns(vec![upload(json!([]), json!(0))]),
            "connections[0] (id \"f\").max_size_bytes",
            "from 1 to 1048576",
        ),
        (
            "max size over",
            with_conns(vec![upload(json!([]), json!(1048577))]),
            "connections[0] (id \"f\").max_size_bytes",
            "from 1 to 1048576",
        ),
        (
            "max size negative",
            with_conns(vec![upload(json!([]), json!(-1))]),
            "connections[0] (id \"f\").max_size_bytes",
            "from 1 to 1048576",
        ),
        (
            "max size float",
            with_conns(vec![upload(json!([]), json!(1.5))]),
            "connections[0] (id \"f\").max_size_bytes",
            "from 1 to 1048576",
        ),
        (
            "max size string",
            with_conns(vec![upload(json!([]), json!("10"))]),
            "connections[0] (id \"f\").max_size_bytes",
            "must be an integer",
        ),
        (
            "max size missing",
            with_conns(vec![
                json!({"id": "f", "display_name": "F", "auth_mode": "file_upload"}),
            ]),
            "connections[0] (id \"f\").max_size_bytes",
            "is required",
        ),
        (
            "description not string",
            with_conns(vec![
                json!({"id": "f", "display_name": "F", "auth_mode": "file_upload", "max_size_bytes": 1, "description": 3}),
            ]),
            "connections[0] (id \"f\").description",
            "must be a string",
        ),
        (
            "login_url not string",
            with_conns(vec![
                json!({"id": "b", "display_name": "B", "auth_mode": "browser_login", "login_url": []}),
            ]),
            "connections[0] (id \"b\").login_url",
            "must be a string",
        ),
        (
            "runtime not object",
            json!({"runtime": "desktop"}),
            "runtime",
            "must be an object",
        ),
        (
            "sandbox_template not string",
            json!({"runtime": {"sandbox_template": true}}),
            "runtime.sandbox_template",
            "must be a string",
        ),
    ];
    for (name, doc, want_loc, want_problem) in cases {
        match parse(doc) {
            Ok(_) => panic!("{name}: accepted"),
            Err(ManifestError::Invalid { location, problem }) => {
                assert_eq!(location, want_loc, "{name}: {problem}");
                assert!(
                    problem.contains(want_problem),
                    "{name}: {problem:?} lacks {want_problem:?}"
                );
            }
            Err(other) => panic!("{name}: unexpected error {other:?}"),
        }
    }
}

#[test]
fn size_and_syntax_errors() {
    let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
    assert!(
        matches!(Manifest::parse(&big), Err(ManifestError::TooLarge { size, .. }) if size == MAX_MANIFEST_BYTES + 1)
    );
    assert!(matches!(
        Manifest::parse(b"{\"connections\": ["),
        Err(ManifestError::Syntax { .. })
    ));
    assert!(matches!(
        Manifest::parse(b""),
        Err(ManifestError::Syntax { .. })
    ));
}

#[test]
fn from_path_reads_and_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("grexal.json");
    std::fs::write(
        &p,
        br#"{"connections": [], "runtime": {"sandbox_template": "desktop"}}"#,
    )
    .expect("write");
    assert!(Manifest::from_path(&p).expect("parse").is_desktop());
    std::fs::write(&p, vec![b' '; MAX_MANIFEST_BYTES + 10]).expect("write");
    assert!(matches!(
        Manifest::from_path(&p),
        Err(ManifestError::TooLarge { .. })
    ));
    assert!(matches!(
        Manifest::from_path(&dir.path().join("nope")),
        Err(ManifestError::Read { .. })
    ));
}

#[test]
fn long_strings_are_truncated_in_errors() {
    let doc = with_conns(vec![
        json!({"id": "a", "display_name": "A", "auth_mode": "x".repeat(5000)}),
    ]);
    let err = parse(doc).expect_err("invalid");
    assert!(err.to_string().len() < 4500, "{err}");
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = Manifest::parse(&bytes);
    }

    #[test]
    fn safe_ids_are_single_components(s in "\\PC{0,70}") {
        if is_safe_id(&s) {
            proptest::prop_assert!(!s.contains('/') && s != "." && s != ".." && !s.contains('\0'));
            proptest::prop_assert!(s.len() <= MAX_ID_BYTES && s.is_ascii());
        }
    }
}
