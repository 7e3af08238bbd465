//! Table-driven tests for the credential document, including a canary that no error
//! carries a value.

use base64::Engine as _;
use serde_json::{json, Value};

use super::*;

const CANARY: &str = "CANARY-s3cr3t-7f3a9c";

/// Also used by the tests of `file` and `read`.
pub(super) fn manifest() -> Manifest {
    Manifest::parse(
        json!({"connections": [
            {"id": "openai", "display_name": "OpenAI", "auth_mode": "secret_input",
             "fields": [{"name": "api_key", "label": "API key", "secret": true},
                        {"name": "org", "label": "Organization", "secret": false}]},
            {"id": "google", "display_name": "Google", "auth_mode": "oauth_redirect",
             "provider": {"auth_url": "https://a", "token_url": "https://t", "scopes": ["email"]}},
            {"id": "ssh_key", "display_name": "SSH key", "auth_mode": "file_upload",
             "accepted_extensions": [".pem", ".KEY"], "max_size_bytes": 16},
            {"id": "any_file", "display_name": "Any", "auth_mode": "file_upload", "max_size_bytes": 1048576},
            {"id": "linkedin", "display_name": "LinkedIn", "auth_mode": "browser_login"}
        ]})
        .to_string()
        .as_bytes(),
    )
    .expect("manifest")
}

fn parse(doc: Value) -> Result<CredentialSet, CredentialsError> {
    CredentialSet::parse(doc.to_string().as_bytes(), &manifest(), Source::Bundle)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn valid_document_parses_every_mode() {
    let set = parse(json!({"version": 3, "connections": {
        "openai": {"fields": {"api_key": "sk-1", "org": "o"}},
        "google": {"access_token": "ya29", "token_type": "Bearer", "expires_at": 1790000000, "scope": "email"},
        "ssh_key": {"filename": "id.PEM", "content_base64": b64(b"hello")},
    }}))
    .expect("valid");
    let Some(Credential::Secret { fields }) = set.connections.get("openai") else {
        panic!("openai")
    };
    assert_eq!(fields["api_key"].expose_secret(), "sk-1");
    let Some(Credential::OAuth(t)) = set.connections.get("google") else {
        panic!("google")
    };
    assert_eq!(
        (t.access_token.expose_secret(), t.token_type.as_str()),
        ("ya29", "Bearer")
    );
    assert_eq!(
        (t.expires_at, t.scope.as_deref()),
        (Some(1790000000), Some("email"))
    );
    let Some(Credential::File(f)) = set.connections.get("ssh_key") else {
        panic!("ssh_key")
    };
    assert_eq!(
        (f.filename.as_str(), f.mime_type.as_str()),
        ("id.PEM", DEFAULT_MIME_TYPE)
    );
    assert_eq!(f.content.expose_secret(), b"hello");
    let missing: Vec<_> = set
        .missing(&manifest())
        .iter()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(missing, vec!["any_file"]);
}

#[test]
fn optional_oauth_fields_and_empty_documents() {
    let set = parse(
        json!({"connections": {"google": {"access_token": "t", "token_type": "Bearer",
        "expires_at": null, "scope": null}}}),
    )
    .expect("valid");
    let Some(Credential::OAuth(t)) = set.connections.get("google") else {
        panic!()
    };
    assert_eq!((t.expires_at, t.scope.as_deref()), (None, None));
    assert!(parse(json!({})).expect("empty").connections.is_empty());
    assert!(parse(json!({"connections": {}}))
        .expect("empty")
        .connections
        .is_empty());
}

#[test]
fn base64_without_padding_and_exact_size_limit() {
    let set = parse(json!({"connections": {"ssh_key": {"filename": "k.pem", "mime_type": "application/x-pem-file",
        "content_base64": b64(&[7u8; 16]).trim_end_matches('=')}}}))
    .expect("16 bytes is the limit");
    let Some(Credential::File(f)) = set.connections.get("ssh_key") else {
        panic!()
    };
    assert_eq!(f.content.expose_secret().len(), 16);
    assert_eq!(f.mime_type, "application/x-pem-file");
}

#[test]
fn invalid_documents() {
    // (case, document, expected location, expected substring of the problem)
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "top not object",
            json!([]),
            "(top level)",
            "must be an object",
        ),
        (
            "connections not object",
            json!({"connections": []}),
            "connections",
            "must be an object",
        ),
        (
            "unknown id",
            json!({"connections": {"nope": {}}}),
            "connections[\"nope\"]",
            "no connection with this id",
        ),
        (
            "browser_login",
            json!({"connections": {"linkedin": {}}}),
            "connections[\"linkedin\"]",
            "browser_login",
        ),
        (
            "entry not object",
            json!({"connections": {"openai": "x"}}),
            "connections[\"openai\"]",
            "must be an object",
        ),
        (
            "secret fields missing",
            json!({"connections": {"openai": {}}}),
            "connections[\"openai\"].fields",
            "is required",
        ),
        (
            "secret fields not object",
            json!({"connections": {"openai": {"fields": []}}}),
            "connections[\"openai\"].fields",
            "must be an object",
        ),
        (
            "secret extra key",
            json!({"connections": {"openai": {"fields": {"api_key": "a", "org": "b"}, "x": 1}}}),
            "connections[\"openai\"].\"x\"",
            "unexpected key",
        ),
        (
            "secret missing field",
            json!({"connections": {"openai": {"fields": {"api_key": "a"}}}}),
            "connections[\"openai\"].fields[\"org\"]",
            "missing",
        ),
        (
            "secret extra field",
            json!({"connections": {"openai": {"fields": {"api_key": "a", "org": "b", "extra": "c"}}}}),
            "connections[\"openai\"].fields[\"extra\"]",
            "not declared",
        ),
        (
            "secret value not string",
            json!({"connections": {"openai": {"fields": {"api_key": 5, "org": "b"}}}}),
            "connections[\"openai\"].fields[\"api_key\"]",
            "must be a string, found a number",
        ),
        (
            "secret value too long",
            json!({"connections": {"openai": {"fields": {"api_key": "a".repeat(MAX_FIELD_VALUE_BYTES + 1), "org": "b"}}}}),
            "connections[\"openai\"].fields[\"api_key\"]",
            "limit",
        ),
        (
            "oauth no access_token",
            json!({"connections": {"google": {"token_type": "Bearer"}}}),
            "connections[\"google\"].\"access_token\"",
            "is required",
        ),
        (
            "oauth empty access_token",
            json!({"connections": {"google": {"access_token": "", "token_type": "Bearer"}}}),
            "connections[\"google\"].\"access_token\"",
            "must not be empty",
        ),
        (
            "oauth no token_type",
            json!({"connections": {"google": {"access_token": "t"}}}),
            "connections[\"google\"].\"token_type\"",
            "is required",
        ),
        (
            "oauth refresh_token",
            json!({"connections": {"google": {"access_token": "t", "token_type": "Bearer", "refresh_token": "r"}}}),
            "connections[\"google\"].\"refresh_token\"",
            "refresh tokens and client secrets never",
        ),
        (
            "oauth client_secret",
            json!({"connections": {"google": {"access_token": "t", "token_type": "Bearer", "client_secret": "s"}}}),
            "connections[\"google\"].\"client_secret\"",
            "refresh tokens and client secrets never",
        ),
        (
            "oauth client_id",
            json!({"connections": {"google": {"access_token": "t", "token_type": "Bearer", "client_id": "i"}}}),
            "connections[\"google\"].\"client_id\"",
            "refresh tokens and client secrets never",
        ),
        (
            "oauth negative expiry",
            json!({"connections": {"google": {"access_token": "t", "token_type": "B", "expires_at": -1}}}),
            "connections[\"google\"].\"expires_at\"",
            "non-negative integer",
        ),
        (
            "oauth float expiry",
            json!({"connections": {"google": {"access_token": "t", "token_type": "B", "expires_at": 1.5}}}),
            "connections[\"google\"].\"expires_at\"",
            "non-negative integer",
        ),
        (
            "oauth string expiry",
            json!({"connections": {"google": {"access_token": "t", "token_type": "B", "expires_at": "1"}}}),
            "connections[\"google\"].\"expires_at\"",
            "must be an integer",
        ),
        (
            "oauth scope not string",
            json!({"connections": {"google": {"access_token": "t", "token_type": "B", "scope": ["a"]}}}),
            "connections[\"google\"].\"scope\"",
            "must be a string, found an array",
        ),
        (
            "file no filename",
            json!({"connections": {"ssh_key": {"content_base64": "aGk="}}}),
            "connections[\"ssh_key\"].\"filename\"",
            "is required",
        ),
        (
            "file no content",
            json!({"connections": {"ssh_key": {"filename": "a.pem"}}}),
            "connections[\"ssh_key\"].\"content_base64\"",
            "is required",
        ),
        (
            "file path in bundle",
            json!({"connections": {"ssh_key": {"filename": "a.pem", "path": "a.pem"}}}),
            "connections[\"ssh_key\"].\"path\"",
            "only allowed in .grexal/connections.json",
        ),
        (
            "file bad base64",
            json!({"connections": {"ssh_key": {"filename": "a.pem", "content_base64": "!!!!"}}}),
            "connections[\"ssh_key\"].\"content_base64\"",
            "not valid standard base64",
        ),
        (
            "file too big",
            json!({"connections": {"ssh_key": {"filename": "a.pem", "content_base64": b64(&[1u8; 17])}}}),
            "connections[\"ssh_key\"].\"content_base64\"",
            "larger than max_size_bytes (16)",
        ),
        (
            "file way too big",
            json!({"connections": {"ssh_key": {"filename": "a.pem", "content_base64": b64(&[1u8; 4096])}}}),
            "connections[\"ssh_key\"].\"content_base64\"",
            "larger than max_size_bytes",
        ),
        (
            "file wrong extension",
            json!({"connections": {"ssh_key": {"filename": "a.txt", "content_base64": "aGk="}}}),
            "connections[\"ssh_key\"].\"filename\"",
            "extension not accepted",
        ),
        (
            "file bad mime",
            json!({"connections": {"ssh_key": {"filename": "a.pem", "mime_type": "pem", "content_base64": "aGk="}}}),
            "connections[\"ssh_key\"].\"mime_type\"",
            "not a MIME type",
        ),
        (
            "file unknown key",
            json!({"connections": {"ssh_key": {"filename": "a.pem", "content_base64": "aGk=", "size": 2}}}),
            "connections[\"ssh_key\"].\"size\"",
            "unexpected key",
        ),
        (
            "filename dotdot",
            json!({"connections": {"any_file": {"filename": "..", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "must not be . or ..",
        ),
        (
            "filename dot",
            json!({"connections": {"any_file": {"filename": ".", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "must not be . or ..",
        ),
        (
            "filename slash",
            json!({"connections": {"any_file": {"filename": "../etc/passwd", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "must not contain /",
        ),
        (
            "filename NUL",
            json!({"connections": {"any_file": {"filename": "a\u{0}b", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "NUL",
        ),
        (
            "filename newline",
            json!({"connections": {"any_file": {"filename": "a\nb", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "control",
        ),
        (
            "filename RLO",
            json!({"connections": {"any_file": {"filename": "gpj.\u{202e}exe", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "bidirectional",
        ),
        (
            "filename soft hyphen",
            json!({"connections": {"any_file": {"filename": "in\u{ad}voice.pdf", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "invisible",
        ),
        (
            "filename tag characters",
            json!({"connections": {"any_file": {"filename": "a\u{e0041}\u{e0042}.pem", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "invisible",
        ),
        (
            "filename Mongolian vowel separator",
            json!({"connections": {"any_file": {"filename": "a\u{180e}b", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "invisible",
        ),
        (
            "filename nominal digit shapes",
            json!({"connections": {"any_file": {"filename": "a\u{206e}b", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "invisible",
        ),
        (
            "filename fullwidth solidus",
            json!({"connections": {"any_file": {"filename": "a\u{ff0f}b", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "look like a slash",
        ),
        (
            "filename too long",
            json!({"connections": {"any_file": {"filename": "a".repeat(256), "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "longer than 255",
        ),
        (
            "filename empty",
            json!({"connections": {"any_file": {"filename": "", "content_base64": "aGk="}}}),
            "connections[\"any_file\"].\"filename\"",
            "must not be empty",
        ),
    ];
    for (name, doc, want_loc, want_problem) in cases {
        match parse(doc) {
            Ok(_) => panic!("{name}: accepted"),
            Err(CredentialsError::Invalid { location, problem }) => {
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
fn duplicates_are_refused() {
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            "duplicate id",
            r#"{"connections": {"google": {"access_token": "a", "token_type": "b"}, "google": {"access_token": "a", "token_type": "b"}}}"#,
            "connections[\"google\"]",
        ),
        (
            "duplicate entry key",
            r#"{"connections": {"google": {"access_token": "a", "access_token": "b", "token_type": "b"}}}"#,
            "connections[\"google\"].\"access_token\"",
        ),
        (
            "duplicate field",
            r#"{"connections": {"openai": {"fields": {"api_key": "a", "api_key": "b", "org": "c"}}}}"#,
            "connections[\"openai\"].fields[\"api_key\"]",
        ),
        (
            "duplicate connections",
            r#"{"connections": {}, "connections": {}}"#,
            "connections",
        ),
    ];
    for (name, doc, want_loc) in cases {
        match CredentialSet::parse(doc.as_bytes(), &manifest(), Source::Bundle) {
            Err(CredentialsError::Invalid { location, problem }) => {
                assert_eq!(location, want_loc, "{name}");
                assert!(problem.contains("duplicate"), "{name}: {problem}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// `n` members `"{key(i)}": {value}`, comma-separated.
fn members(n: usize, key: impl Fn(usize) -> String, value: &str) -> String {
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("\"{}\": {value}", key(i)));
    }
    out
}

/// 100 000 keys in one object (about 1 MiB of the 16 MiB allowed): refused at the first key
/// that cannot be there, the rest never looked at (the duplicate check compared every key
/// with every earlier one: ~50 s for this many). Only the top level may hold keys that are
/// not ours, and at most `MAX_TOP_LEVEL_KEYS` of them.
#[test]
fn objects_with_very_many_keys_are_refused_at_the_first_that_cannot_be_there() {
    const N: usize = 100_000;
    let refused: Vec<(&str, String, &str, &str)> = vec![
        (
            "undeclared fields",
            format!(
                r#"{{"connections": {{"openai": {{"fields": {{{}}}}}}}}}"#,
                members(N, |i| format!("k{i}"), "\"\"")
            ),
            "connections[\"openai\"].fields[\"k0\"]",
            "not declared in grexal.json",
        ),
        (
            "one declared field, many times",
            format!(
                r#"{{"connections": {{"openai": {{"fields": {{{}}}}}}}}}"#,
                members(N, |_| "api_key".into(), "\"\"")
            ),
            "connections[\"openai\"].fields[\"api_key\"]",
            "duplicate key",
        ),
        (
            "undeclared ids",
            format!(
                r#"{{"connections": {{{}}}}}"#,
                members(N, |i| format!("c{i}"), "{}")
            ),
            "connections[\"c0\"]",
            "no connection with this id",
        ),
        (
            "one id, many times",
            format!(
                r#"{{"connections": {{{}}}}}"#,
                members(
                    N,
                    |_| "google".into(),
                    r#"{"access_token": "t", "token_type": "b"}"#
                )
            ),
            "connections[\"google\"]",
            "duplicate entry",
        ),
        (
            "one entry key, many times",
            format!(
                r#"{{"connections": {{"google": {{{}}}}}}}"#,
                members(N, |_| "access_token".into(), "\"t\"")
            ),
            "connections[\"google\"].\"access_token\"",
            "duplicate key",
        ),
        (
            "unknown entry keys",
            format!(
                r#"{{"connections": {{"ssh_key": {{{}}}}}}}"#,
                members(N, |i| format!("x{i}"), "1")
            ),
            "connections[\"ssh_key\"].\"x0\"",
            "unexpected key",
        ),
        (
            "keys that are not ours",
            format!(
                r#"{{{}, "connections": {{}}}}"#,
                members(N, |i| format!("meta{i}"), "null")
            ),
            "(top level)",
            "more than 256 keys",
        ),
    ];
    for (name, doc, want_loc, want_problem) in refused {
        assert!(doc.len() < MAX_CREDENTIALS_BYTES, "{name}");
        match CredentialSet::parse(doc.as_bytes(), &manifest(), Source::Bundle) {
            Err(CredentialsError::Invalid { location, problem }) => {
                assert_eq!(location, want_loc, "{name}: {problem}");
                assert!(problem.contains(want_problem), "{name}: {problem}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // As many keys as the top level may have are fine.
    let doc = format!(
        r#"{{{}, "connections": {{}}}}"#,
        members(
            MAX_TOP_LEVEL_KEYS - 1,
            |i| format!("meta{i}"),
            "[1, {\"x\": 2}]"
        )
    );
    let set = CredentialSet::parse(doc.as_bytes(), &manifest(), Source::Bundle)
        .expect("256 top-level keys");
    assert!(set.connections.is_empty());
}

/// Env-delivered fields count `NAME=value` and a NUL each, over every env connection in
/// manifest order; a total past `MAX_ENV_BYTES` is refused naming the connection that
/// takes it there. File-delivered fields do not count.
#[test]
fn env_delivered_fields_must_fit_the_agents_environment() {
    let env_fields = |prefix: &str, n: usize| -> Value {
        (0..n)
            .map(|i| json!({"name": format!("{prefix}{i}"), "label": "L", "secret": true}))
            .collect()
    };
    let m = Manifest::parse(
        json!({"connections": [
            {"id": "bulk", "display_name": "B", "auth_mode": "secret_input", "delivery": "env",
             "fields": env_fields("f", 16)},
            {"id": "more", "display_name": "M", "auth_mode": "secret_input", "delivery": "env",
             "fields": [{"name": "x", "label": "X", "secret": true}]},
            {"id": "files", "display_name": "F", "auth_mode": "secret_input", "delivery": "file",
             "fields": env_fields("g", 4)}
        ]})
        .to_string()
        .as_bytes(),
    )
    .expect("manifest");
    // BULK_F0..BULK_F15: 10 names of 7 bytes and 6 of 8, plus '=' and NUL each.
    let overhead = 10 * 7 + 6 * 8 + 16 * 2;
    let bulk = |extra: usize| -> Value {
        let mut fields = serde_json::Map::new();
        for i in 0..16 {
            let len = if i == 0 {
                MAX_FIELD_VALUE_BYTES - overhead + extra
            } else {
                MAX_FIELD_VALUE_BYTES
            };
            fields.insert(format!("f{i}"), json!("v".repeat(len)));
        }
        json!({"fields": fields})
    };
    let files: Value = json!({"fields": {"g0": "w".repeat(MAX_FIELD_VALUE_BYTES),
        "g1": "w".repeat(MAX_FIELD_VALUE_BYTES), "g2": "w", "g3": "w"}});
    let doc = |bulk: Value, more: Option<&str>| {
        let mut connections = json!({"bulk": bulk, "files": files.clone()});
        if let Some(x) = more {
            connections["more"] = json!({"fields": {"x": x}});
        }
        json!({ "connections": connections }).to_string()
    };
    let parse = |text: String| CredentialSet::parse(text.as_bytes(), &m, Source::Bundle);

    // Exactly the limit, with 128 KiB of file-delivered fields beside it.
    parse(doc(bulk(0), None)).expect("exactly MAX_ENV_BYTES");
    let refused: Vec<(&str, String, &str)> = vec![
        ("one byte over", doc(bulk(1), None), "connections[\"bulk\"]"),
        // An empty value still takes "MORE_X=" and a NUL.
        (
            "a later connection",
            doc(bulk(0), Some("")),
            "connections[\"more\"]",
        ),
    ];
    for (name, text, want_loc) in refused {
        match parse(text) {
            Err(CredentialsError::Invalid { location, problem }) => {
                assert_eq!(location, want_loc, "{name}");
                assert!(
                    problem.contains(&format!("over the {MAX_ENV_BYTES}-byte limit")),
                    "{name}: {problem}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// A NUL cannot be in an environment variable: an env-delivered field holding one is a
/// problem of the document, named by its field and never its value; a file-delivered one
/// may hold any bytes.
#[test]
fn a_nul_in_an_env_delivered_field_is_refused_at_parse() {
    let m = Manifest::parse(
        json!({"connections": [
            {"id": "openai", "display_name": "O", "auth_mode": "secret_input", "delivery": "env",
             "fields": [{"name": "api_key", "label": "K", "secret": true}]},
            {"id": "smtp", "display_name": "S", "auth_mode": "secret_input", "delivery": "file",
             "fields": [{"name": "password", "label": "P", "secret": true}]}
        ]})
        .to_string()
        .as_bytes(),
    )
    .expect("manifest");
    let doc = |key: &str, password: &str| {
        json!({"connections": {"openai": {"fields": {"api_key": key}},
            "smtp": {"fields": {"password": password}}}})
        .to_string()
    };
    let parse = |text: String| CredentialSet::parse(text.as_bytes(), &m, Source::Bundle);
    match parse(doc("sk-CANARY\u{0}x", "p")) {
        Err(e @ CredentialsError::Invalid { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(r#"connections["openai"].fields["api_key"]"#) && text.contains("NUL"),
                "{text}"
            );
            assert!(!text.contains("CANARY"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    parse(doc("sk-plain", "pass\u{0}word")).expect("a file may hold a NUL");
}

#[test]
fn size_and_syntax() {
    let big = vec![b' '; MAX_CREDENTIALS_BYTES + 1];
    assert!(matches!(
        CredentialSet::parse(&big, &manifest(), Source::Bundle),
        Err(CredentialsError::TooLarge { .. })
    ));
    let Err(CredentialsError::Syntax { detail }) = CredentialSet::parse(
        b"{\"connections\": {\"openai\":",
        &manifest(),
        Source::Bundle,
    ) else {
        panic!("syntax")
    };
    assert!(
        detail.starts_with("unexpected end of input at line 1"),
        "{detail}"
    );
}

/// Every way a bad document can carry the canary: no error may show it.
#[test]
fn canary_never_appears_in_errors() {
    let c = CANARY;
    let docs: Vec<String> = vec![
        json!({"connections": {"openai": {"fields": {"api_key": c}}}}).to_string(),
        json!({"connections": {"openai": {"fields": {"api_key": c, "org": c, "x": c}}}}).to_string(),
        json!({"connections": {"openai": {"fields": {"api_key": [c], "org": c}}}}).to_string(),
        json!({"connections": {"openai": {"fields": {"api_key": {"v": c}, "org": c}}}}).to_string(),
        json!({"connections": {"google": {"access_token": c, "token_type": "B", "refresh_token": c}}}).to_string(),
        json!({"connections": {"google": {"access_token": c, "token_type": "B", "client_secret": c}}}).to_string(),
        json!({"connections": {"google": {"access_token": c}}}).to_string(),
        json!({"connections": {"google": {"access_token": c, "token_type": "B", "expires_at": c}}}).to_string(),
        json!({"connections": {"ssh_key": {"filename": "a.pem", "content_base64": c}}}).to_string(),
        json!({"connections": {"ssh_key": {"filename": "a.pem", "content_base64": format!("{}!", b64(c.as_bytes()))}}}).to_string(),
        json!({"connections": {"ssh_key": {"filename": "a.pem", "content_base64": b64(format!("{c}{c}").as_bytes())}}}).to_string(),
        json!({"connections": {"nope": {"fields": {"k": c}}}}).to_string(),
        json!({"connections": {"linkedin": {"password": c}}}).to_string(),
        json!({"connections": c}).to_string(),
        format!(r#"{{"connections": {{"openai": {{"fields": {{"api_key": "{c}", "org": "{c}"}}}}}}, "#),
        format!(r#"{{"connections": {{"openai": {{"fields": {{"api_key": "{c}\q"}}}}}}}}"#),
        format!(r#"{{"connections": {{"openai": {{"fields": {{"api_key": "{c}" "org"}}}}}}}}"#),
        format!(r#"{{"connections": {{"google": {{"access_token": "{c}", "token_type": "B"}}}}}} {c}"#),
        format!(r#"{{"connections": {{"google": {{"access_token": {c}}}}}}}"#),
    ];
    for doc in docs {
        let err = CredentialSet::parse(doc.as_bytes(), &manifest(), Source::Bundle)
            .expect_err("every canary document is bad");
        let shown = format!("{err} / {err:?}");
        assert!(
            !shown.contains(c) && !shown.contains("CANARY"),
            "leaked: {shown}"
        );
    }
    // A valid set's Debug is redacted too.
    let set = parse(json!({"connections": {"openai": {"fields": {"api_key": c, "org": c}}}}))
        .expect("valid");
    assert!(!format!("{set:?}").contains(c));
}

#[test]
fn example_entries_parse_as_their_own_shape() {
    let m = manifest();
    for c in &m.connections {
        let hint = missing_hint(c);
        assert!(hint.contains(&format!("{:?}", c.id)), "{hint}");
        let Some(entry) = example_entry(c) else {
            assert!(matches!(c.mode, AuthMode::BrowserLogin { .. }));
            continue;
        };
        let doc: Value = serde_json::from_str(&format!("{{\"connections\": {{{entry}}}}}"))
            .expect("example is JSON");
        let body = &doc["connections"][&c.id];
        match &c.mode {
            AuthMode::SecretInput { fields, .. } => {
                for f in fields {
                    assert!(body["fields"][&f.name].is_string(), "{entry}");
                }
            }
            AuthMode::OauthRedirect { .. } => {
                assert!(body["access_token"].is_string() && body["token_type"].is_string())
            }
            AuthMode::FileUpload { .. } => {
                let name = body["filename"].as_str().expect("filename");
                assert!(check_filename(name).is_ok());
                assert!(body["path"].is_string());
            }
            AuthMode::BrowserLogin { .. } => unreachable!(),
        }
    }
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = CredentialSet::parse(&bytes, &manifest(), Source::Bundle);
    }
}
