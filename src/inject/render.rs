//! Rendering what the agent receives: the `ctx.connect` JSON bodies and the env file.
//!
//! Both are built in buffers sized up front for the worst case, so they never reallocate
//! (a reallocation would leave an unzeroized copy of the secrets in freed memory), and end
//! in a `SecretBytes` or a zeroizing buffer.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};
use zeroize::Zeroizing;

use crate::credentials::{OAuthToken, UploadedFile};
use crate::manifest::SecretField;
use crate::secret::{secret_bytes, ExposeSecret, SecretBytes, SecretString};

/// Serializes `value` into a `SecretBytes` of exactly the output's length. `budget` is an
/// upper bound on the output size; the buffer is reserved once at that size.
fn to_secret_json<T: Serialize>(
    value: &T,
    budget: usize,
) -> Result<SecretBytes, serde_json::Error> {
    let mut buf = Zeroizing::new(Vec::with_capacity(budget));
    serde_json::to_writer(&mut *buf, value)?;
    let mut exact = Vec::with_capacity(buf.len());
    exact.extend_from_slice(&buf);
    Ok(secret_bytes(exact))
}

/// The JSON-escaped size of a string is at most six bytes per input byte (`\u00XX`).
fn json_budget(s: &str) -> usize {
    s.len().saturating_mul(6).saturating_add(8)
}

struct SecretFields<'a> {
    declared: &'a [SecretField],
    values: &'a BTreeMap<String, SecretString>,
}

impl Serialize for SecretFields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.declared.len()))?;
        for f in self.declared {
            if let Some(v) = self.values.get(&f.name) {
                map.serialize_entry(&f.name, v.expose_secret())?;
            }
        }
        map.end()
    }
}

/// `{field: value}` for exactly the declared fields, in declaration order.
pub(crate) fn secret_body(
    declared: &[SecretField],
    values: &BTreeMap<String, SecretString>,
) -> Result<SecretBytes, serde_json::Error> {
    let budget = 2 + declared
        .iter()
        .map(|f| {
            json_budget(&f.name)
                + values
                    .get(&f.name)
                    .map_or(0, |v| json_budget(v.expose_secret()))
        })
        .sum::<usize>();
    to_secret_json(&SecretFields { declared, values }, budget)
}

struct OAuthBody<'a>(&'a OAuthToken);

impl Serialize for OAuthBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("access_token", t.access_token.expose_secret())?;
        map.serialize_entry("token_type", &t.token_type)?;
        map.serialize_entry("expires_at", &t.expires_at)?;
        map.serialize_entry("scope", &t.scope)?;
        map.end()
    }
}

/// `{"access_token", "token_type", "expires_at", "scope"}`, null when absent.
pub(crate) fn oauth_body(t: &OAuthToken) -> Result<SecretBytes, serde_json::Error> {
    let budget = 128
        + json_budget(t.access_token.expose_secret())
        + json_budget(&t.token_type)
        + t.scope.as_deref().map_or(0, json_budget);
    to_secret_json(&OAuthBody(t), budget)
}

/// `{"file_path", "filename", "size", "mime_type"}`; no secret, but served the same way.
pub(crate) fn file_body(
    file_path: &str,
    f: &UploadedFile,
) -> Result<SecretBytes, serde_json::Error> {
    let body = serde_json::json!({
        "file_path": file_path,
        "filename": f.filename,
        "size": f.content.expose_secret().len(),
        "mime_type": f.mime_type,
    });
    let budget =
        128 + json_budget(file_path) + json_budget(&f.filename) + json_budget(&f.mime_type);
    to_secret_json(&body, budget)
}

/// The env file in systemd `EnvironmentFile=` syntax: one `NAME="value"` per line.
///
/// Inside double quotes systemd unescapes `\"`, `\\`, `` \` `` and `\$` and keeps every other
/// character as is, including a raw newline, which continues the value on the next line
/// (a `\n` escape would stay a literal backslash and `n`). So those four characters are
/// backslash-escaped and newlines are written as themselves. Values are UTF-8 (systemd
/// ignores assignments that are not) and free of NUL (checked before rendering).
pub(crate) fn env_file(version: u64, env: &[(String, SecretString)]) -> Zeroizing<Vec<u8>> {
    let header =
        format!("# Written by grexal-sidecar: credentials version {version}. Do not edit.\n");
    let budget = header.len()
        + env
            .iter()
            .map(|(k, v)| k.len() + 4 + 2 * v.expose_secret().len())
            .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(budget));
    out.extend_from_slice(header.as_bytes());
    for (name, value) in env {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        for &b in value.expose_secret().as_bytes() {
            if matches!(b, b'"' | b'\\' | b'`' | b'$') {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.extend_from_slice(b"\"\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference parser of systemd's double-quoted values, for the round trip.
    fn systemd_unquote(line: &str) -> (String, String) {
        let (k, rest) = line.split_once('=').expect("=");
        let inner = rest.strip_prefix('"').expect("open quote");
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some(n @ ('"' | '\\' | '`' | '$')) => out.push(n),
                    Some('\n') => {}
                    Some(n) => {
                        out.push('\\');
                        out.push(n)
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        (k.to_owned(), out)
    }

    #[test]
    fn env_file_escapes_round_trip() {
        let cases = [
            "plain",
            "",
            "with \"quotes\"",
            "back\\slash",
            "dollar $HOME and ${X}",
            "back`tick`",
            "multi\nline\n",
            "\\n literal",
            "unicode ✓ ключ",
            "'single'",
            "trailing\\",
        ];
        for value in cases {
            let env = vec![("NAME".to_owned(), SecretString::from(value))];
            let text = String::from_utf8(env_file(1, &env).to_vec()).expect("utf8");
            let body = text.split_once('\n').expect("header").1;
            let (k, v) = systemd_unquote(body);
            assert_eq!((k.as_str(), v.as_str()), ("NAME", value), "{text:?}");
        }
    }

    #[test]
    fn bodies_have_the_documented_shapes() {
        let t = OAuthToken {
            access_token: SecretString::from("tok\"en"),
            token_type: "Bearer".into(),
            expires_at: None,
            scope: Some("email".into()),
        };
        let v: serde_json::Value =
            serde_json::from_slice(oauth_body(&t).expect("json").expose_secret()).expect("parse");
        assert_eq!(
            v,
            serde_json::json!({"access_token": "tok\"en", "token_type": "Bearer", "expires_at": null, "scope": "email"})
        );
        let declared = vec![SecretField {
            name: "api_key".into(),
            label: "k".into(),
            secret: true,
            env_var: "X".into(),
        }];
        let values = BTreeMap::from([("api_key".to_owned(), SecretString::from("\u{1}\u{7f}é"))]);
        let body = secret_body(&declared, &values).expect("json");
        let v: serde_json::Value = serde_json::from_slice(body.expose_secret()).expect("parse");
        assert_eq!(v, serde_json::json!({"api_key": "\u{1}\u{7f}é"}));
    }
}
