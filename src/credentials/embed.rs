//! `seal`'s reading of `"path"` entries: a document written for `dev` (a file_upload entry
//! giving `"path"` to a local file) is sealed with the file's contents in it, as
//! `content_base64`, since a sandbox has no such file and refuses `"path"`.
//!
//! `seal` has no manifest, so any connection entry with a `"path"` is taken for a file
//! entry (in any other mode the key is refused anyway). The path is read exactly as `dev`
//! reads it ([`super::read_local_file`]: relative to the document's directory, a regular
//! file or a symlink to one). The rest of the document is kept byte for byte: only the
//! entries with a `"path"` are rewritten, their other members copied as written, and the
//! result is built in one zeroizing allocation of its exact size (no reallocation leaves
//! a copy of the plaintext in freed memory); the file's bytes are held in a secret until
//! they are encoded into it.

use std::path::Path;

use base64::Engine as _;
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::file::filename_from_path;
use super::json::{for_each_member, Value};
use super::read::read_local_file;
use super::{invalid, plain_text, syntax, CredentialsError};
use crate::manifest::quoted;
use crate::secret::{ExposeSecret, SecretBytes};

/// One file read for an entry: what is written for it, where the entry was.
pub struct Embedded {
    /// The connection id.
    pub id: String,
    /// The `"path"` as given.
    pub path: String,
    /// The file's size in bytes.
    pub size: usize,
}

/// The document with the files in it, and which files they were.
pub struct WithFiles {
    pub document: Zeroizing<Vec<u8>>,
    pub files: Vec<Embedded>,
}

/// An entry to rewrite: its span in the document and what replaces it.
struct Rewrite<'a> {
    span: std::ops::Range<usize>,
    /// The entry's members but `"path"`, as written (the key decoded: names are not secret).
    members: Vec<(String, &'a RawValue)>,
    /// Added when the entry has none: the path's last component, as under `dev`.
    filename: Option<String>,
    content: SecretBytes,
}

impl Rewrite<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        let mut member = |out: &mut Vec<u8>, key: &str, raw: &[u8]| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.extend_from_slice(json_string(key).as_bytes());
            out.push(b':');
            out.extend_from_slice(raw);
        };
        for (key, value) in &self.members {
            member(out, key, value.get().as_bytes());
        }
        if let Some(name) = &self.filename {
            member(out, "filename", json_string(name).as_bytes());
        }
        member(out, "content_base64", b"\"");
        let start = out.len();
        let len = base64::encoded_len(self.content.expose_secret().len(), true).unwrap_or(0);
        // Within the capacity reserved for the whole document: no reallocation.
        out.resize(start + len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(self.content.expose_secret(), &mut out[start..])
            .unwrap_or(0);
        debug_assert_eq!(written, len);
        out.extend_from_slice(b"\"}");
    }

    fn len(&self) -> usize {
        let mut len = 2; // the braces
        let mut count = 0;
        for (key, value) in &self.members {
            len += json_string(key).len() + 1 + value.get().len();
            count += 1;
        }
        if let Some(name) = &self.filename {
            len += json_string("filename").len() + 1 + json_string(name).len();
            count += 1;
        }
        len += json_string("content_base64").len() + 1;
        len += 2 + base64::encoded_len(self.content.expose_secret().len(), true).unwrap_or(0);
        len + count // the commas: one before each member but the first, and content_base64
    }
}

fn json_string(text: &str) -> String {
    // Serializing a str cannot fail.
    serde_json::to_string(text).unwrap_or_default()
}

/// The document with every `"path"` entry's file read into it as `content_base64`, or
/// `None` if no entry has a `"path"` (the document is sealed as it is). `document` must
/// be UTF-8 JSON with a `connections` object; `base_dir` is the document's directory.
/// The result must still be checked against the caller's size limit; a file larger than
/// `max_file` is refused before it is read.
pub fn embed_paths(
    document: &[u8],
    base_dir: &Path,
    max_file: u64,
) -> Result<Option<WithFiles>, CredentialsError> {
    let text = std::str::from_utf8(document).map_err(|_| CredentialsError::Syntax {
        detail: "not UTF-8".into(),
    })?;
    let top: &RawValue = serde_json::from_str(text).map_err(|e| syntax(&e))?;
    let mut connections = None;
    walk(top, |key, value| {
        if key == "connections" {
            connections = Some(value);
        }
        Ok(())
    })?;
    let Some(Value::Object(connections)) = connections.map(Value::of) else {
        return Ok(None);
    };
    let mut rewrites = Vec::new();
    let mut embedded = Vec::new();
    walk(connections, |id, entry| {
        let Value::Object(entry) = Value::of(entry) else {
            return Ok(());
        };
        let loc = format!("connections[{}]", quoted(&id));
        let mut members = Vec::new();
        let mut path = None;
        let mut has = (false, false); // filename, content_base64
        walk(entry, |key, value| {
            match key.as_str() {
                "path" if path.is_some() => {
                    return Err(invalid(format!("{loc}.\"path\""), "duplicate key"))
                }
                "path" => {
                    path = Some(value);
                    return Ok(());
                }
                "filename" => has.0 = true,
                "content_base64" => has.1 = true,
                _ => {}
            }
            members.push((key, value));
            Ok(())
        })?;
        let Some(path) = path else {
            return Ok(());
        };
        let path_loc = format!("{loc}.\"path\"");
        if has.1 {
            return Err(invalid(loc, "give either content_base64 or path, not both"));
        }
        let rel = plain_text(&path_loc, Value::of(path))?;
        let filename = match has.0 {
            true => None,
            false => Some(filename_from_path(&loc, &rel)?),
        };
        let content = read_local_file(&path_loc, base_dir, &rel, max_file, || {
            invalid(
                &path_loc,
                format!("file is larger than a bundle can carry ({max_file} bytes)"),
            )
        })?;
        embedded.push(Embedded {
            id: id.clone(),
            path: rel,
            size: content.expose_secret().len(),
        });
        rewrites.push(Rewrite {
            span: span_in(text, entry),
            members,
            filename,
            content,
        });
        Ok(())
    })?;
    if rewrites.is_empty() {
        return Ok(None);
    }
    let total = rewrites
        .iter()
        .fold(document.len(), |len, r| len - r.span.len() + r.len());
    let mut out = Zeroizing::new(Vec::with_capacity(total));
    let mut at = 0;
    for rewrite in &rewrites {
        out.extend_from_slice(&document[at..rewrite.span.start]);
        rewrite.write(&mut out);
        at = rewrite.span.end;
    }
    out.extend_from_slice(&document[at..]);
    debug_assert_eq!(out.len(), total);
    debug_assert_eq!(out.capacity(), total);
    Ok(Some(WithFiles {
        document: out,
        files: embedded,
    }))
}

/// Where `raw`, borrowed from `text`, lies in it.
fn span_in(text: &str, raw: &RawValue) -> std::ops::Range<usize> {
    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
    start..start + raw.get().len()
}

fn walk<'a>(
    object: &'a RawValue,
    each: impl FnMut(String, &'a RawValue) -> Result<(), CredentialsError>,
) -> Result<(), CredentialsError> {
    for_each_member(object, each).map_err(|e| syntax(&e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embed(doc: &str, dir: &Path) -> Result<Option<String>, String> {
        embed_paths(doc.as_bytes(), dir, 1 << 20)
            .map(|r| r.map(|w| String::from_utf8(w.document.to_vec()).expect("utf-8")))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_path_entry_gets_the_files_contents_and_the_rest_is_kept_as_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::write(dir.path().join("keys/deploy.pem"), b"-----KEY\x00\xff-----").unwrap();
        let doc = r#"{"v": 1,  "connections": {
            "openai": {"fields": {"api_key": "sk-\u00e9"}},
            "deploy":  {"mime_type": "application/x-pem-file", "path": "keys/deploy.pem"},
            "named": {"path": "keys/deploy.pem", "filename": "id.pem"}
        }, "after": [1, 2]}"#;
        let out = embed(doc, dir.path()).unwrap().expect("rewritten");
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"-----KEY\x00\xff-----");
        let want = format!(
            r#"{{"v": 1,  "connections": {{
            "openai": {{"fields": {{"api_key": "sk-\u00e9"}}}},
            "deploy":  {{"mime_type":"application/x-pem-file","filename":"deploy.pem","content_base64":"{b64}"}},
            "named": {{"filename":"id.pem","content_base64":"{b64}"}}
        }}, "after": [1, 2]}}"#
        );
        assert_eq!(out, want);
        // Nothing to read: sealed as it is.
        assert_eq!(
            embed(r#"{"connections": {"a": {"fields": {}}}}"#, dir.path()),
            Ok(None)
        );
    }

    #[test]
    fn bad_path_entries_name_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.pem"), b"x").unwrap();
        for (doc, needles) in [
            (
                r#"{"connections": {"k": {"path": "absent.pem"}}}"#,
                &[r#"connections["k"]."path""#, "absent.pem", "No such file"][..],
            ),
            (
                r#"{"connections": {"k": {"path": "/etc/hostname"}}}"#,
                &[r#"connections["k"]."path""#, "relative"],
            ),
            (
                r#"{"connections": {"k": {"path": "f.pem", "content_base64": "eA=="}}}"#,
                &[r#"connections["k"]"#, "not both"],
            ),
            (
                r#"{"connections": {"k": {"path": "f.pem", "path": "f.pem"}}}"#,
                &[r#"connections["k"]."path""#, "duplicate"],
            ),
            (
                r#"{"connections": {"k": {"path": 7}}}"#,
                &[r#"connections["k"]."path""#, "must be a string"],
            ),
            (
                r#"{"connections": {"k": {"path": "."}}}"#,
                &[r#"connections["k"]."filename""#],
            ),
        ] {
            let err = embed(doc, dir.path()).unwrap_err();
            for needle in needles {
                assert!(err.contains(needle), "{doc}: {needle}: {err}");
            }
        }
        std::fs::write(dir.path().join("big"), vec![0u8; 11]).unwrap();
        let err = embed_paths(
            br#"{"connections": {"k": {"path": "big"}}}"#,
            dir.path(),
            10,
        )
        .err()
        .expect("too big")
        .to_string();
        assert!(err.contains(r#"connections["k"]."path""#), "{err}");
    }
}
