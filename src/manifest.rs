//! The agent's `grexal.json`: its connections and runtime, validated.
//!
//! Keys we do not use are ignored (the manifest carries many that are not ours); what we
//! do use is validated strictly, and every error names the connection and the field. A key
//! repeated in an object, at any depth, is refused (the `json` submodule).
//!
//! Environment variable names under `delivery: "env"`:
//! - the default is [`default_env_var`]: `{CONNECTION_ID}_{FIELD_NAME}` in upper snake case;
//! - a field may override it with `env_var` (`^[A-Za-z_][A-Za-z0-9_]*$`, at most 128 bytes);
//! - a name may not be one the daemon sets itself (anything starting `GREXAL_`) or one that
//!   changes how the agent's process, its interpreter or the programs it runs start, or
//!   where its traffic goes and whom it trusts, whole families by prefix or suffix
//!   (`PYTHON*`, `NODE_*`, `LD_*`, `*_PROXY`, `*FLAGS`, …: [`is_reserved_env_var`]);
//! - two env-delivered fields, in the same or different connections, may not share a name.
//!
//! These name checks apply to fields that are actually delivered as env vars; under the
//! other deliveries `env_var` is resolved but unused, so only its syntax is checked when it
//! is given explicitly.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

mod json;
mod reserved;
pub use reserved::is_reserved_env_var;

/// The manifest size limit; a `grexal.json` is a few KiB in practice.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// The platform's maximum for `file_upload.max_size_bytes`.
pub const MAX_UPLOAD_BYTES: u64 = 1024 * 1024;
/// The longest connection id or field name, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// The longest env var name we accept, in bytes.
pub const MAX_ENV_VAR_BYTES: usize = 128;
/// Limits that keep a hostile manifest from costing much: connections, fields per
/// connection, accepted extensions, scopes, and the length of any free-text string.
const MAX_CONNECTIONS: usize = 256;
const MAX_FIELDS: usize = 64;
const MAX_LIST_ITEMS: usize = 64;
const MAX_TEXT_BYTES: usize = 4096;
const MAX_EXTENSION_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub connections: Vec<Connection>,
    /// `runtime.sandbox_template`, e.g. `"desktop"`.
    pub sandbox_template: Option<String>,
}

/// A declared connection. `id` is validated as a safe single path component
/// (`[A-Za-z0-9_-]`, 1..=64 bytes, not starting with `-`), so it can name a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: String,
    pub display_name: String,
    pub mode: AuthMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    SecretInput {
        fields: Vec<SecretField>,
        delivery: Delivery,
    },
    OauthRedirect {
        provider: OauthProvider,
    },
    FileUpload {
        accepted_extensions: Vec<String>,
        max_size_bytes: u64,
        description: Option<String>,
    },
    BrowserLogin {
        login_url: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretField {
    pub name: String,
    pub label: String,
    pub secret: bool,
    /// The env var name under `delivery: "env"`: the field's `env_var` key, or the default
    /// upper-snake `{CONNECTION_ID}_{FIELD_NAME}`. Always resolved, whatever the delivery.
    pub env_var: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    #[default]
    RuntimeObject,
    Env,
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthProvider {
    pub auth_url: String,
    pub token_url: String,
    pub scopes: Vec<String>,
}

impl AuthMode {
    /// The wire name: `secret_input`, `oauth_redirect`, `file_upload`, `browser_login`.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMode::SecretInput { .. } => "secret_input",
            AuthMode::OauthRedirect { .. } => "oauth_redirect",
            AuthMode::FileUpload { .. } => "file_upload",
            AuthMode::BrowserLogin { .. } => "browser_login",
        }
    }

    /// True for the modes whose credential is collected before the sandbox starts.
    pub fn is_pre_collected(&self) -> bool {
        !matches!(self, AuthMode::BrowserLogin { .. })
    }
}

impl Delivery {
    /// The wire name: `runtime_object`, `env`, `file`.
    pub fn name(self) -> &'static str {
        match self {
            Delivery::RuntimeObject => "runtime_object",
            Delivery::Env => "env",
            Delivery::File => "file",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("manifest is not valid JSON: {detail}")]
    Syntax { detail: String },
    /// A declaration is invalid; `location` names the connection and field, e.g.
    /// `connections[2] (id "github").fields[0].name`.
    #[error("{location}: {problem}")]
    Invalid { location: String, problem: String },
}

impl ManifestError {
    /// A manifest that cannot be read (missing, unreadable, a directory) is a missing input
    /// (66), like every other input file; one that can be read but is not valid is 65.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            ManifestError::Read { .. } => crate::exit::ExitCode::NoInput,
            _ => crate::exit::ExitCode::Manifest,
        }
    }
}

impl Manifest {
    /// Reads and parses a manifest file, refusing files over [`MAX_MANIFEST_BYTES`] before
    /// reading them whole.
    pub fn from_path(path: &Path) -> Result<Self, ManifestError> {
        use std::io::Read;
        let read_err = |source| ManifestError::Read {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        // One byte over the limit is enough to know it is too large.
        file.take(MAX_MANIFEST_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        Self::parse(&bytes)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                size: bytes.len(),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let doc = json::parse(bytes)?;
        let top = doc
            .as_object()
            .ok_or_else(|| invalid("(top level)", "must be a JSON object"))?;

        let connections = match top.get("connections") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                if items.len() > MAX_CONNECTIONS {
                    return Err(invalid(
                        "connections",
                        format!(
                            "{} entries, over the limit of {MAX_CONNECTIONS}",
                            items.len()
                        ),
                    ));
                }
                let mut out = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    out.push(parse_connection(index, item)?);
                }
                out
            }
            Some(other) => {
                return Err(invalid("connections", must_be("an array", other)));
            }
        };
        check_unique_ids(&connections)?;
        check_env_names(&connections)?;

        let sandbox_template = match top.get("runtime") {
            None | Some(Value::Null) => None,
            Some(Value::Object(runtime)) => {
                opt_text(runtime, "runtime.sandbox_template", "sandbox_template")?
            }
            Some(other) => return Err(invalid("runtime", must_be("an object", other))),
        };

        Ok(Manifest {
            connections,
            sandbox_template,
        })
    }

    pub fn connection(&self, id: &str) -> Option<&Connection> {
        self.connections.iter().find(|c| c.id == id)
    }

    pub fn is_desktop(&self) -> bool {
        self.sandbox_template.as_deref() == Some("desktop")
    }
}

/// Whether `s` is a safe single path component usable as a connection id or field name:
/// `[A-Za-z0-9_-]`, 1..=64 bytes, not starting with `-` (so it is never an option either).
/// `.`, `..`, `/`, NUL and every non-ASCII character are excluded by the alphabet.
pub fn is_safe_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_BYTES
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `s` is a valid env var name: `^[A-Za-z_][A-Za-z0-9_]*$`, at most 128 bytes.
pub fn is_valid_env_var(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    s.len() <= MAX_ENV_VAR_BYTES && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The default env var name of a field: `{CONNECTION_ID}_{FIELD_NAME}` in upper snake case.
///
/// Each part is converted on its own: `-` becomes `_`; an `_` is inserted before an upper-case
/// letter that follows a lower-case letter or a digit (a camelCase boundary); then everything
/// is upper-cased. Runs of capitals are kept together. Examples: (`open-ai`, `apiKey`) →
/// `OPEN_AI_API_KEY`; (`github`, `token`) → `GITHUB_TOKEN`; (`aws`, `secretAccessKey`) →
/// `AWS_SECRET_ACCESS_KEY`; (`x`, `HTTPProxy`) → `X_HTTPPROXY`; (`s3`, `key2Id`) →
/// `S3_KEY2_ID`. An id starting with a digit gives an invalid name; the manifest then
/// needs an explicit `env_var` for env-delivered fields.
pub fn default_env_var(connection_id: &str, field_name: &str) -> String {
    let mut out = String::with_capacity(connection_id.len() + field_name.len() + 8);
    upper_snake_into(connection_id, &mut out);
    out.push('_');
    upper_snake_into(field_name, &mut out);
    out
}

fn upper_snake_into(part: &str, out: &mut String) {
    let mut prev: Option<char> = None;
    for c in part.chars() {
        if c.is_ascii_uppercase()
            && prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
        {
            out.push('_');
        }
        out.push(if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        });
        prev = Some(c);
    }
}

fn invalid(location: impl Into<String>, problem: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        location: location.into(),
        problem: problem.into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn must_be(expected: &str, found: &Value) -> String {
    format!("must be {expected}, found {}", type_name(found))
}

/// A short, printable rendering of an untrusted string for an error message (the credential
/// document uses it for keys, never for values).
pub(crate) fn quoted(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn text_value(location: &str, v: &Value) -> Result<String, ManifestError> {
    match v {
        Value::String(s) if s.len() > MAX_TEXT_BYTES => Err(invalid(
            location,
            format!("{} bytes, over the {MAX_TEXT_BYTES}-byte limit", s.len()),
        )),
        Value::String(s) => Ok(s.clone()),
        other => Err(invalid(location, must_be("a string", other))),
    }
}

fn req_text(obj: &Map<String, Value>, loc: &str, key: &str) -> Result<String, ManifestError> {
    match obj.get(key) {
        None => Err(invalid(loc, "is required")),
        Some(v) => text_value(loc, v),
    }
}

fn req_nonempty(obj: &Map<String, Value>, loc: &str, key: &str) -> Result<String, ManifestError> {
    let s = req_text(obj, loc, key)?;
    if s.trim().is_empty() {
        return Err(invalid(loc, "must not be empty"));
    }
    Ok(s)
}

fn opt_text(
    obj: &Map<String, Value>,
    loc: &str,
    key: &str,
) -> Result<Option<String>, ManifestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => text_value(loc, v).map(Some),
    }
}

fn list<'v>(
    obj: &'v Map<String, Value>,
    loc: &str,
    key: &str,
    required: bool,
) -> Result<&'v [Value], ManifestError> {
    match obj.get(key) {
        None | Some(Value::Null) if !required => Ok(&[]),
        None => Err(invalid(loc, "is required")),
        Some(Value::Array(items)) if items.len() > MAX_LIST_ITEMS => Err(invalid(
            loc,
            format!(
                "{} entries, over the limit of {MAX_LIST_ITEMS}",
                items.len()
            ),
        )),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(invalid(loc, must_be("an array", other))),
    }
}

fn parse_connection(index: usize, item: &Value) -> Result<Connection, ManifestError> {
    let base = format!("connections[{index}]");
    let obj = item
        .as_object()
        .ok_or_else(|| invalid(&base, must_be("an object", item)))?;

    let id_loc = format!("{base}.id");
    let id = req_text(obj, &id_loc, "id")?;
    if !is_safe_id(&id) {
        return Err(invalid(
            id_loc,
            format!(
                "{} is not a valid id: use 1 to {MAX_ID_BYTES} of A-Z a-z 0-9 _ -, not starting with -",
                quoted(&id)
            ),
        ));
    }
    // From here on the location carries the id, which is now known to be printable.
    let base = format!("{base} (id {id:?})");
    let display_name = req_nonempty(obj, &format!("{base}.display_name"), "display_name")?;

    let mode_loc = format!("{base}.auth_mode");
    let mode_name = req_text(obj, &mode_loc, "auth_mode")?;
    let mode = match mode_name.as_str() {
        "secret_input" => parse_secret_input(&base, &id, obj)?,
        "oauth_redirect" => parse_oauth(&base, obj)?,
        "file_upload" => parse_file_upload(&base, obj)?,
        "browser_login" => AuthMode::BrowserLogin {
            login_url: opt_text(obj, &format!("{base}.login_url"), "login_url")?,
        },
        other => {
            return Err(invalid(
                mode_loc,
                format!(
                    "unknown auth_mode {}: expected secret_input, oauth_redirect, file_upload or browser_login",
                    quoted(other)
                ),
            ))
        }
    };
    Ok(Connection {
        id,
        display_name,
        mode,
    })
}

fn parse_secret_input(
    base: &str,
    id: &str,
    obj: &Map<String, Value>,
) -> Result<AuthMode, ManifestError> {
    let delivery_loc = format!("{base}.delivery");
    let delivery = match opt_text(obj, &delivery_loc, "delivery")?.as_deref() {
        None | Some("runtime_object") => Delivery::RuntimeObject,
        Some("env") => Delivery::Env,
        Some("file") => Delivery::File,
        Some(other) => {
            return Err(invalid(
                delivery_loc,
                format!(
                    "unknown delivery {}: expected runtime_object, env or file",
                    quoted(other)
                ),
            ))
        }
    };

    let fields_loc = format!("{base}.fields");
    let items = match obj.get("fields") {
        Some(Value::Array(items)) if items.len() > MAX_FIELDS => {
            return Err(invalid(
                fields_loc,
                format!("{} entries, over the limit of {MAX_FIELDS}", items.len()),
            ))
        }
        Some(Value::Array(items)) => items,
        None => return Err(invalid(fields_loc, "is required for secret_input")),
        Some(other) => return Err(invalid(fields_loc, must_be("an array", other))),
    };
    if items.is_empty() {
        return Err(invalid(fields_loc, "must declare at least one field"));
    }

    let mut fields: Vec<SecretField> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let floc = format!("{base}.fields[{i}]");
        let fobj = item
            .as_object()
            .ok_or_else(|| invalid(&floc, must_be("an object", item)))?;
        let name_loc = format!("{floc}.name");
        let name = req_text(fobj, &name_loc, "name")?;
        if !is_safe_id(&name) {
            return Err(invalid(
                name_loc,
                format!(
                    "{} is not a valid field name: use 1 to {MAX_ID_BYTES} of A-Z a-z 0-9 _ -, not starting with -",
                    quoted(&name)
                ),
            ));
        }
        if let Some(j) = fields.iter().position(|f| f.name == name) {
            return Err(invalid(
                name_loc,
                format!("duplicate field name {name:?}, also declared by fields[{j}]"),
            ));
        }
        let label = req_nonempty(fobj, &format!("{floc}.label"), "label")?;
        let secret_loc = format!("{floc}.secret");
        let secret = match fobj.get("secret") {
            Some(Value::Bool(b)) => *b,
            None => return Err(invalid(secret_loc, "is required")),
            Some(other) => return Err(invalid(secret_loc, must_be("a boolean", other))),
        };
        let env_loc = format!("{floc}.env_var");
        let env_var = match opt_text(fobj, &env_loc, "env_var")? {
            Some(explicit) => {
                if !is_valid_env_var(&explicit) {
                    return Err(invalid(
                        env_loc,
                        format!(
                            "{} is not a valid env var name (^[A-Za-z_][A-Za-z0-9_]*$, at most {MAX_ENV_VAR_BYTES} bytes)",
                            quoted(&explicit)
                        ),
                    ));
                }
                explicit
            }
            None => default_env_var(id, &name),
        };
        fields.push(SecretField {
            name,
            label,
            secret,
            env_var,
        });
    }
    Ok(AuthMode::SecretInput { fields, delivery })
}

fn parse_oauth(base: &str, obj: &Map<String, Value>) -> Result<AuthMode, ManifestError> {
    let ploc = format!("{base}.provider");
    let p = match obj.get("provider") {
        Some(Value::Object(p)) => p,
        None => return Err(invalid(ploc, "is required for oauth_redirect")),
        Some(other) => return Err(invalid(ploc, must_be("an object", other))),
    };
    let auth_url = req_nonempty(p, &format!("{ploc}.auth_url"), "auth_url")?;
    let token_url = req_nonempty(p, &format!("{ploc}.token_url"), "token_url")?;
    let scopes_loc = format!("{ploc}.scopes");
    let scopes = list(p, &scopes_loc, "scopes", true)?
        .iter()
        .enumerate()
        .map(|(i, v)| text_value(&format!("{scopes_loc}[{i}]"), v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AuthMode::OauthRedirect {
        provider: OauthProvider {
            auth_url,
            token_url,
            scopes,
        },
    })
}

fn parse_file_upload(base: &str, obj: &Map<String, Value>) -> Result<AuthMode, ManifestError> {
    let ext_loc = format!("{base}.accepted_extensions");
    let mut accepted_extensions = Vec::new();
    for (i, v) in list(obj, &ext_loc, "accepted_extensions", false)?
        .iter()
        .enumerate()
    {
        let loc = format!("{ext_loc}[{i}]");
        let ext = text_value(&loc, v)?;
        // A leading dot, then a short run of filename-safe characters (".pem", ".tar.gz").
        let ok = ext.len() >= 2
            && ext.len() <= MAX_EXTENSION_BYTES
            && ext.starts_with('.')
            && ext[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
        if !ok {
            return Err(invalid(
                loc,
                format!(
                    "{} is not an extension: a dot followed by A-Z a-z 0-9 . _ - +, at most {MAX_EXTENSION_BYTES} bytes",
                    quoted(&ext)
                ),
            ));
        }
        accepted_extensions.push(ext);
    }
    let size_loc = format!("{base}.max_size_bytes");
    let max_size_bytes = match obj.get("max_size_bytes") {
        None => return Err(invalid(size_loc, "is required for file_upload")),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) if (1..=MAX_UPLOAD_BYTES).contains(&n) => n,
            _ => {
                return Err(invalid(
                    size_loc,
                    format!("must be an integer from 1 to {MAX_UPLOAD_BYTES}"),
                ))
            }
        },
        Some(other) => return Err(invalid(size_loc, must_be("an integer", other))),
    };
    let description = opt_text(obj, &format!("{base}.description"), "description")?;
    Ok(AuthMode::FileUpload {
        accepted_extensions,
        max_size_bytes,
        description,
    })
}

fn check_unique_ids(connections: &[Connection]) -> Result<(), ManifestError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, c) in connections.iter().enumerate() {
        if let Some(first) = seen.insert(&c.id, i) {
            return Err(invalid(
                format!("connections[{i}] (id {:?}).id", c.id),
                format!("duplicate id, also declared by connections[{first}]"),
            ));
        }
    }
    Ok(())
}

fn check_env_names(connections: &[Connection]) -> Result<(), ManifestError> {
    let mut seen: HashMap<&str, String> = HashMap::new();
    for (ci, c) in connections.iter().enumerate() {
        let AuthMode::SecretInput {
            fields,
            delivery: Delivery::Env,
        } = &c.mode
        else {
            continue;
        };
        for (fi, f) in fields.iter().enumerate() {
            let here = format!("connections[{ci}] (id {:?}).fields[{fi}]", c.id);
            let loc = format!("{here}.env_var");
            if !is_valid_env_var(&f.env_var) {
                return Err(invalid(
                    loc,
                    format!(
                        "the default env name {:?} is not a valid env var name; set env_var",
                        f.env_var
                    ),
                ));
            }
            if let Some(why) = is_reserved_env_var(&f.env_var) {
                return Err(invalid(
                    loc,
                    format!("env name {:?} is not allowed: {why}", f.env_var),
                ));
            }
            if let Some(other) = seen.get(f.env_var.as_str()) {
                return Err(invalid(
                    loc,
                    format!("env name {:?} collides with {other}", f.env_var),
                ));
            }
            seen.insert(&f.env_var, here);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
