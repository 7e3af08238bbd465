//! The plaintext credential document: what a bundle decrypts to, and what
//! `.grexal/connections.json` holds in local development (the same shapes).
//!
//! ```json
//! {"connections": {
//!   "openai":  {"fields": {"api_key": "sk-..."}},
//!   "google":  {"access_token": "ya29...", "token_type": "Bearer", "expires_at": 1790000000, "scope": "email"},
//!   "ssh_key": {"filename": "id_ed25519", "mime_type": "text/plain", "content_base64": "..."}
//! }}
//! ```
//! The manifest decides each entry's mode; an entry is validated against it.
//!
//! In local development a file entry may give `"path"` (relative to the directory of
//! `connections.json`) instead of `content_base64`; `filename` then defaults to the path's
//! last component. Unknown top-level keys are ignored (at most [`MAX_TOP_LEVEL_KEYS`] keys);
//! inside `connections` every key is checked as soon as it is read: an id or key given
//! twice, an id not declared in the manifest, a key its entry's mode does not have and a
//! field not declared are refused there and then, so the work is linear in the document
//! and no object is held beyond what the manifest allows.
//!
//! Secrets: serde_json checks the document and hands over values as borrowed raw text
//! ([`json`]); a string is decoded by us, once, into the `SecretString` that keeps it, so no
//! decoded copy is left in freed memory (serde_json would decode an escaped string in a
//! scratch buffer it frees without zeroizing). No error message ever carries a value
//! (serde_json's own messages can quote input, so only its category and position are kept).

mod embed;
mod json;
mod read;

pub use embed::{embed_paths, Embedded, WithFiles};
use read::read_dev_file;
pub use read::{read_document, read_document_and_mode, ReadError};

use std::collections::BTreeMap;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::value::RawValue;
use zeroize::{Zeroize, Zeroizing};

use self::json::{BadString, JsonStr, Value};
use crate::manifest::{quoted, AuthMode, Connection, Delivery, Manifest};
use crate::secret::{secret_bytes, ExposeSecret, SecretBytes, SecretString};

/// The document size limit: a few files of at most 1 MiB each, base64-encoded.
pub const MAX_CREDENTIALS_BYTES: usize = 16 * 1024 * 1024;
/// The most keys the document's top level may have: `connections` and keys that are not
/// ours, ignored. The other objects are bounded by what they may hold, each key at most
/// once: `connections` the declared connections, an entry its mode's keys, `fields` the
/// declared fields (at most 64); a key beyond that is refused as soon as it is seen.
pub const MAX_TOP_LEVEL_KEYS: usize = 256;
/// The longest `secret_input` value, in bytes (it may become an env var).
pub const MAX_FIELD_VALUE_BYTES: usize = 64 * 1024;
/// The most the env-delivered fields may add to the agent's environment, in bytes, each
/// counted as `NAME=value` and its terminating NUL. Linux refuses an `execve` whose
/// arguments and environment together pass a quarter of the stack limit (2 MiB under the
/// usual 8 MiB), so this leaves at least as much again to the agent's command line and
/// the environment it inherits from the daemon (which is small).
pub const MAX_ENV_BYTES: usize = 1024 * 1024;
/// The longest uploaded filename, in bytes (the usual `NAME_MAX`).
pub const MAX_FILENAME_BYTES: usize = 255;
/// The longest non-secret text (token type, scope, MIME type), in bytes.
const MAX_TEXT_BYTES: usize = 4096;
const MAX_MIME_BYTES: usize = 255;
/// The MIME type of an upload that does not give one.
pub const DEFAULT_MIME_TYPE: &str = "application/octet-stream";

/// Credentials for some of the manifest's connections, validated against it.
#[derive(Debug, Default)]
pub struct CredentialSet {
    pub connections: BTreeMap<String, Credential>,
}

#[derive(Debug)]
pub enum Credential {
    Secret {
        fields: BTreeMap<String, SecretString>,
    },
    OAuth(OAuthToken),
    File(UploadedFile),
}

#[derive(Debug)]
pub struct OAuthToken {
    pub access_token: SecretString,
    pub token_type: String,
    /// Unix seconds.
    pub expires_at: Option<u64>,
    pub scope: Option<String>,
}

#[derive(Debug)]
pub struct UploadedFile {
    /// The original filename, validated as a safe single path component
    /// ([`check_filename`]).
    pub filename: String,
    pub mime_type: String,
    pub content: SecretBytes,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("credential document is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("credential document is not valid JSON: {detail}")]
    Syntax { detail: String },
    /// `location` names the connection and field, never a value.
    #[error("{location}: {problem}")]
    Invalid { location: String, problem: String },
}

/// Where the document comes from; `dev` resolves `"path"` entries relative to a base dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    Bundle,
    DevFile { base_dir: &'a std::path::Path },
}

impl CredentialSet {
    pub fn parse(
        json: &[u8],
        manifest: &Manifest,
        source: Source<'_>,
    ) -> Result<Self, CredentialsError> {
        if json.len() > MAX_CREDENTIALS_BYTES {
            return Err(CredentialsError::TooLarge {
                size: json.len(),
                limit: MAX_CREDENTIALS_BYTES,
            });
        }
        // The whole document is checked here; nothing in it is decoded yet.
        let doc: &RawValue = serde_json::from_slice(json).map_err(|e| syntax(&e))?;
        let Value::Object(top) = Value::of(doc) else {
            return Err(invalid(
                "(top level)",
                format!("must be an object, found {}", Value::of(doc).kind()),
            ));
        };
        let mut entries = None;
        let mut count = 0;
        walk(top, |key, value| {
            count += 1;
            if count > MAX_TOP_LEVEL_KEYS {
                return Err(invalid(
                    "(top level)",
                    format!("has more than {MAX_TOP_LEVEL_KEYS} keys"),
                ));
            }
            if key != "connections" {
                return Ok(()); // Not ours; see the module doc.
            }
            if entries.replace(value).is_some() {
                return Err(invalid("connections", "duplicate key"));
            }
            Ok(())
        })?;

        let mut set = CredentialSet::default();
        let entries = match entries.map(Value::of) {
            None | Some(Value::Null) => return Ok(set),
            Some(Value::Object(entries)) => entries,
            Some(other) => {
                return Err(invalid(
                    "connections",
                    format!("must be an object, found {}", other.kind()),
                ));
            }
        };
        // Each id is refused as soon as it is seen twice or is not declared: at most one
        // entry per declared connection is ever looked at.
        walk(entries, |id, entry| {
            let loc = format!("connections[{}]", quoted(&id));
            if set.connections.contains_key(&id) {
                return Err(invalid(loc, "duplicate entry"));
            }
            let Some(conn) = manifest.connection(&id) else {
                return Err(invalid(
                    loc,
                    "no connection with this id is declared in grexal.json",
                ));
            };
            let Value::Object(entry) = Value::of(entry) else {
                return Err(invalid(
                    loc,
                    format!("must be an object, found {}", Value::of(entry).kind()),
                ));
            };
            let credential = match &conn.mode {
                AuthMode::SecretInput { fields, delivery } => {
                    parse_secret(&loc, fields, *delivery, entry)?
                }
                AuthMode::OauthRedirect { .. } => parse_oauth(&loc, entry)?,
                AuthMode::FileUpload {
                    accepted_extensions,
                    max_size_bytes,
                    ..
                } => parse_file(&loc, accepted_extensions, *max_size_bytes, entry, source)?,
                AuthMode::BrowserLogin { .. } => {
                    return Err(invalid(
                        loc,
                        "a browser_login connection takes no credential: its session lives in the sandbox's browser",
                    ));
                }
            };
            set.connections.insert(id, credential);
            Ok(())
        })?;
        check_env_size(&set, manifest)?;
        Ok(set)
    }

    /// Pre-collected connections of the manifest with no credential here.
    pub fn missing<'m>(&self, manifest: &'m Manifest) -> Vec<&'m crate::manifest::Connection> {
        manifest
            .connections
            .iter()
            .filter(|c| c.mode.is_pre_collected() && !self.connections.contains_key(&c.id))
            .collect()
    }
}

/// Refuses a set whose env-delivered fields would not fit the agent's environment
/// ([`MAX_ENV_BYTES`]); the error names the connection, in manifest order, whose fields
/// take the total past the limit. Without this the install succeeds and the agent's
/// `execve` fails (E2BIG).
fn check_env_size(set: &CredentialSet, manifest: &Manifest) -> Result<(), CredentialsError> {
    let mut total = 0usize;
    for conn in &manifest.connections {
        let AuthMode::SecretInput {
            fields,
            delivery: Delivery::Env,
        } = &conn.mode
        else {
            continue;
        };
        let Some(Credential::Secret { fields: values }) = set.connections.get(&conn.id) else {
            continue;
        };
        for field in fields {
            if let Some(value) = values.get(&field.name) {
                total += field.env_var.len() + value.expose_secret().len() + 2;
            }
        }
        if total > MAX_ENV_BYTES {
            return Err(invalid(
                format!("connections[{}]", quoted(&conn.id)),
                format!(
                    "its env-delivered fields take the credentials in the agent's environment to \
                     {total} bytes (NAME=value and a NUL each), over the {MAX_ENV_BYTES}-byte limit"
                ),
            ));
        }
    }
    Ok(())
}

/// Validates an uploaded file's name as one safe path component, returning the problem.
///
/// Refused: empty, `.`, `..`, over 255 bytes; `/`, `\` and NUL; control characters (C0,
/// DEL, C1); invisible formatting characters that make a name display as something else
/// (bidi overrides and isolates such as U+202E, zero-width characters, U+FEFF); and
/// characters that look like a slash (U+2044, U+2215, U+FF0F, U+FF3C, …). Ordinary
/// Unicode letters, digits, punctuation and spaces are allowed, as is a leading dot
/// (`.npmrc` is a common upload).
pub fn check_filename(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > MAX_FILENAME_BYTES {
        return Err("is longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return Err("must not be . or ..");
    }
    for c in name.chars() {
        match c {
            '/' | '\\' => return Err("must not contain / or \\"),
            '\0' => return Err("must not contain NUL"),
            c if c.is_control() => return Err("must not contain control characters"),
            '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}' => {
                return Err("must not contain invisible or bidirectional formatting characters")
            }
            '\u{2044}' | '\u{2215}' | '\u{2216}' | '\u{2571}' | '\u{2572}' | '\u{29F5}'
            | '\u{29F8}' | '\u{29F9}' | '\u{FE68}' | '\u{FF0F}' | '\u{FF3C}' => {
                return Err("must not contain characters that look like a slash")
            }
            _ => {}
        }
    }
    Ok(())
}

/// What `.grexal/connections.json` should hold for `connection`, as the text of one
/// `"id": {...}` member of its `"connections"` object; `None` for browser_login, which takes
/// no credential. Placeholders are in angle brackets.
pub fn example_entry(connection: &Connection) -> Option<String> {
    use serde_json::json;
    let body = match &connection.mode {
        AuthMode::SecretInput { fields, .. } => {
            let fields: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|f| (f.name.clone(), json!(format!("<{}>", f.label))))
                .collect();
            json!({ "fields": fields })
        }
        AuthMode::OauthRedirect { .. } => json!({
            "access_token": format!("<access token for {}>", connection.display_name),
            "token_type": "Bearer",
        }),
        AuthMode::FileUpload {
            accepted_extensions,
            ..
        } => {
            let name = format!(
                "{}{}",
                connection.id,
                accepted_extensions.first().map_or("", String::as_str)
            );
            json!({ "filename": name, "path": name })
        }
        AuthMode::BrowserLogin { .. } => return None,
    };
    Some(format!("{}: {}", json!(connection.id), body))
}

/// The line `dev` prints for a missing credential:
/// `connection "openai" (OpenAI): add "openai": {...} to .grexal/connections.json`.
pub fn missing_hint(connection: &Connection) -> String {
    match example_entry(connection) {
        Some(entry) => format!(
            "connection {:?} ({}): add {entry} under \"connections\" in .grexal/connections.json",
            connection.id, connection.display_name
        ),
        None => format!(
            "connection {:?} ({}): browser_login takes no entry in .grexal/connections.json",
            connection.id, connection.display_name
        ),
    }
}

fn invalid(location: impl Into<String>, problem: impl Into<String>) -> CredentialsError {
    CredentialsError::Invalid {
        location: location.into(),
        problem: problem.into(),
    }
}

/// serde_json's message can quote the input (`invalid type: string "..."`), so only the
/// category and position are kept.
fn syntax(e: &serde_json::Error) -> CredentialsError {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "read error",
        Category::Syntax => "syntax error",
        Category::Data => "invalid data",
        Category::Eof => "unexpected end of input",
    };
    CredentialsError::Syntax {
        detail: format!("{what} at line {} column {}", e.line(), e.column()),
    }
}

/// Calls `each` with the members of an object of the (already checked) document, values
/// undecoded, and stops at the first error it returns.
fn walk<'a>(
    object: &'a RawValue,
    each: impl FnMut(String, &'a RawValue) -> Result<(), CredentialsError>,
) -> Result<(), CredentialsError> {
    json::for_each_member(object, each).map_err(|e| syntax(&e))?
}

/// An entry's members, one slot per key its mode knows (`known`, in that order). A key
/// given twice, or one the mode does not know (`unknown` says why), is refused as soon as
/// it is seen, so an entry never holds more members than its mode has keys.
fn entry_keys<'a, const N: usize>(
    loc: &str,
    entry: &'a RawValue,
    known: [&str; N],
    unknown: &str,
) -> Result<[Option<Value<'a>>; N], CredentialsError> {
    let mut slots = [None; N];
    walk(entry, |key, value| {
        let kloc = format!("{loc}.{}", quoted(&key));
        let Some(i) = known.iter().position(|k| *k == key) else {
            return Err(invalid(kloc, unknown));
        };
        if slots[i].replace(Value::of(value)).is_some() {
            return Err(invalid(kloc, "duplicate key"));
        }
        Ok(())
    })?;
    Ok(slots)
}

fn bad_string(loc: &str, e: BadString) -> CredentialsError {
    invalid(loc, format!("is not a valid JSON string: it has {e}"))
}

fn parse_secret(
    loc: &str,
    declared: &[crate::manifest::SecretField],
    delivery: Delivery,
    entry: &RawValue,
) -> Result<Credential, CredentialsError> {
    let [given] = entry_keys(
        loc,
        entry,
        ["fields"],
        "unexpected key: a secret_input entry has only \"fields\"",
    )?;
    let floc = format!("{loc}.fields");
    let values = match given {
        Some(Value::Object(values)) => values,
        Some(other) => {
            return Err(invalid(
                floc,
                format!("must be an object, found {}", other.kind()),
            ))
        }
        None => return Err(invalid(floc, "is required")),
    };
    // A field is refused as soon as it is seen twice or is not declared: at most the
    // declared fields (grexal.json declares at most 64) are ever held.
    let mut given: BTreeMap<String, &RawValue> = BTreeMap::new();
    walk(values, |name, value| {
        let vloc = format!("{floc}[{}]", quoted(&name));
        if !declared.iter().any(|f| f.name == name) {
            return Err(invalid(vloc, "not declared in grexal.json"));
        }
        if given.insert(name, value).is_some() {
            return Err(invalid(vloc, "duplicate key"));
        }
        Ok(())
    })?;
    let mut fields = BTreeMap::new();
    for (name, value) in given {
        let vloc = format!("{floc}[{}]", quoted(&name));
        let text = match Value::of(value) {
            Value::Str(text) => text,
            other => {
                return Err(invalid(
                    vloc,
                    format!("must be a string, found {}", other.kind()),
                ))
            }
        };
        if text.decoded_len().map_err(|e| bad_string(&vloc, e))? > MAX_FIELD_VALUE_BYTES {
            return Err(invalid(
                vloc,
                format!("is over the {MAX_FIELD_VALUE_BYTES}-byte limit"),
            ));
        }
        let secret = text.to_secret().map_err(|e| bad_string(&vloc, e))?;
        // An environment variable cannot hold a NUL: refused here, with the document's
        // other problems, rather than when the env file or the agent's env is written.
        if delivery == Delivery::Env && secret.expose_secret().as_bytes().contains(&0) {
            return Err(invalid(
                vloc,
                "contains a NUL character (\\u0000), which an env-delivered value cannot hold",
            ));
        }
        fields.insert(name, secret);
    }
    if let Some(missing) = declared.iter().find(|f| !fields.contains_key(&f.name)) {
        return Err(invalid(
            format!("{floc}[{}]", quoted(&missing.name)),
            "missing",
        ));
    }
    Ok(Credential::Secret { fields })
}

fn parse_oauth(loc: &str, entry: &RawValue) -> Result<Credential, CredentialsError> {
    let [access_token, token_type, expires_at, scope] = entry_keys(
        loc,
        entry,
        ["access_token", "token_type", "expires_at", "scope"],
        "not accepted: only access_token, token_type, expires_at and scope enter the sandbox; \
         refresh tokens and client secrets never do (the platform refreshes tokens)",
    )?;
    let kloc = |k: &str| format!("{loc}.{}", quoted(k));
    let access_token = match access_token {
        None => return Err(invalid(kloc("access_token"), "is required")),
        Some(Value::Str(s)) => {
            let at = kloc("access_token");
            if s.decoded_len().map_err(|e| bad_string(&at, e))? == 0 {
                return Err(invalid(at, "must not be empty"));
            }
            s.to_secret().map_err(|e| bad_string(&at, e))?
        }
        Some(other) => {
            return Err(invalid(
                kloc("access_token"),
                format!("must be a string, found {}", other.kind()),
            ))
        }
    };
    let token_type = match token_type {
        None => return Err(invalid(kloc("token_type"), "is required")),
        Some(v) => {
            let t = plain_text(&kloc("token_type"), v)?;
            if t.is_empty() {
                return Err(invalid(kloc("token_type"), "must not be empty"));
            }
            t
        }
    };
    let expires_at = match expires_at {
        None | Some(Value::Null) => None,
        Some(Value::Number(Some(n))) => Some(n),
        Some(Value::Number(None)) => {
            return Err(invalid(
                kloc("expires_at"),
                "must be a non-negative integer (unix seconds)",
            ))
        }
        Some(other) => {
            return Err(invalid(
                kloc("expires_at"),
                format!("must be an integer, found {}", other.kind()),
            ))
        }
    };
    let scope = match scope {
        None | Some(Value::Null) => None,
        Some(v) => Some(plain_text(&kloc("scope"), v)?),
    };
    Ok(Credential::OAuth(OAuthToken {
        access_token,
        token_type,
        expires_at,
        scope,
    }))
}

/// A string that is not a secret (token type, scope, filename, MIME type, path).
fn plain_text(loc: &str, v: Value<'_>) -> Result<String, CredentialsError> {
    match v {
        Value::Str(s) if s.decoded_len().map_err(|e| bad_string(loc, e))? > MAX_TEXT_BYTES => Err(
            invalid(loc, format!("is over the {MAX_TEXT_BYTES}-byte limit")),
        ),
        Value::Str(s) => s.to_plain().map_err(|e| bad_string(loc, e)),
        other => Err(invalid(
            loc,
            format!("must be a string, found {}", other.kind()),
        )),
    }
}

fn parse_file(
    loc: &str,
    accepted_extensions: &[String],
    max_size: u64,
    entry: &RawValue,
    source: Source<'_>,
) -> Result<Credential, CredentialsError> {
    let [filename, mime_type, content_b64, path] = entry_keys(
        loc,
        entry,
        ["filename", "mime_type", "content_base64", "path"],
        "unexpected key: a file_upload entry has filename, mime_type and content_base64 (or path in development)",
    )?;
    let kloc = |k: &str| format!("{loc}.{}", quoted(k));
    let path = match path {
        Some(_) if !matches!(source, Source::DevFile { .. }) => {
            return Err(invalid(
                kloc("path"),
                "only allowed in .grexal/connections.json (local development)",
            ));
        }
        Some(v) => Some(plain_text(&kloc("path"), v)?),
        None => None,
    };
    let filename = match filename {
        Some(v) => Some(plain_text(&kloc("filename"), v)?),
        None => None,
    };
    let mime_type = match mime_type {
        Some(v) => Some(plain_text(&kloc("mime_type"), v)?),
        None => None,
    };
    let content_b64 = match content_b64 {
        None => None,
        Some(Value::Str(s)) => Some(s),
        Some(other) => {
            return Err(invalid(
                kloc("content_base64"),
                format!("must be a string, found {}", other.kind()),
            ))
        }
    };

    let filename = match (filename, &path) {
        (Some(f), _) => f,
        (None, Some(p)) => std::path::Path::new(p)
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                invalid(
                    format!("{loc}.\"filename\""),
                    "is required (path has no file name)",
                )
            })?,
        (None, None) => return Err(invalid(format!("{loc}.\"filename\""), "is required")),
    };
    let name_loc = format!("{loc}.\"filename\"");
    check_filename(&filename).map_err(|p| invalid(&name_loc, p))?;
    if !accepted_extensions.is_empty() {
        let lower = filename.to_lowercase();
        if !accepted_extensions
            .iter()
            .any(|e| lower.ends_with(&e.to_lowercase()))
        {
            return Err(invalid(
                name_loc,
                format!(
                    "extension not accepted; grexal.json accepts {}",
                    accepted_extensions.join(", ")
                ),
            ));
        }
    }

    let mime_loc = format!("{loc}.\"mime_type\"");
    let mime_type = match mime_type {
        None => DEFAULT_MIME_TYPE.to_owned(),
        Some(m) => {
            let ok = !m.is_empty()
                && m.len() <= MAX_MIME_BYTES
                && m.contains('/')
                && m.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
            if !ok {
                return Err(invalid(mime_loc, "is not a MIME type (e.g. text/plain)"));
            }
            m
        }
    };

    let content = match (content_b64, path, source) {
        (Some(_), Some(_), _) => {
            return Err(invalid(loc, "give either content_base64 or path, not both"));
        }
        (Some(b64), None, _) => decode_base64(&format!("{loc}.\"content_base64\""), b64, max_size)?,
        (None, Some(p), Source::DevFile { base_dir }) => {
            read_dev_file(&format!("{loc}.\"path\""), base_dir, &p, max_size)?
        }
        _ => return Err(invalid(format!("{loc}.\"content_base64\""), "is required")),
    };
    Ok(Credential::File(UploadedFile {
        filename,
        mime_type,
        content,
    }))
}

fn too_big(loc: &str, max_size: u64) -> CredentialsError {
    invalid(
        loc,
        format!("file is larger than max_size_bytes ({max_size})"),
    )
}

/// Moves bytes into a `SecretBytes` whose allocation is exactly their length, so the
/// conversion to a boxed slice does not reallocate and leave an unzeroized copy behind.
fn into_secret(mut buf: Vec<u8>) -> SecretBytes {
    let mut exact = Vec::with_capacity(buf.len());
    exact.extend_from_slice(&buf);
    buf.zeroize();
    secret_bytes(exact)
}

fn decode_base64(
    loc: &str,
    b64: JsonStr<'_>,
    max_size: u64,
) -> Result<SecretBytes, CredentialsError> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let text_len = b64.decoded_len().map_err(|e| bad_string(loc, e))?;
    let estimate = base64::decoded_len_estimate(text_len);
    // The estimate may exceed the true size by up to 2 bytes; check it before allocating.
    if estimate as u64 > max_size + 2 {
        return Err(too_big(loc, max_size));
    }
    // Base64 as written needs no decoding of its JSON string; with escapes (`\/` is common)
    // the text is decoded into a secret first.
    let decoded_text;
    let input = match b64.verbatim() {
        Some(text) => text.as_bytes(),
        None => {
            decoded_text = b64.to_secret().map_err(|e| bad_string(loc, e))?;
            decoded_text.expose_secret().as_bytes()
        }
    };
    let mut buf = Zeroizing::new(vec![0u8; estimate]);
    // The decoder's error names the offending byte and offset: a fragment of the secret.
    let n = ENGINE
        .decode_slice(input, &mut buf[..])
        .map_err(|_| invalid(loc, "is not valid standard base64"))?;
    if n as u64 > max_size {
        return Err(too_big(loc, max_size));
    }
    let mut exact = Vec::with_capacity(n);
    exact.extend_from_slice(&buf[..n]);
    Ok(secret_bytes(exact))
}

#[cfg(test)]
mod tests;
