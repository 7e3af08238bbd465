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
mod file;
mod json;
mod read;

pub use embed::{embed_paths, Embedded, WithFiles};
pub use read::{read_document, read_document_and_mode, ReadError};

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use self::file::parse_file;
use self::json::{BadString, Value};
use crate::manifest::{quoted, AuthMode, Connection, Delivery, Manifest};
use crate::secret::{ExposeSecret, SecretBytes, SecretString};

pub use self::file::check_filename;

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

#[cfg(test)]
mod tests;
