//! A `file_upload` entry: its filename checked as one safe path component, its MIME
//! type, and its content, from `content_base64` or (in development) a `path` beside
//! `connections.json`, decoded or read into a secret no larger than `max_size_bytes`.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::value::RawValue;
use zeroize::{Zeroize, Zeroizing};

use super::json::{JsonStr, Value};
use super::read::read_dev_file;
use super::{
    bad_string, entry_keys, invalid, plain_text, Credential, CredentialsError, Source,
    UploadedFile, DEFAULT_MIME_TYPE, MAX_FILENAME_BYTES, MAX_MIME_BYTES,
};
use crate::manifest::quoted;
use crate::secret::{secret_bytes, ExposeSecret, SecretBytes};

/// Validates an uploaded file's name as one safe path component, returning the problem.
///
/// Refused: empty, `.`, `..`, over 255 bytes; `/`, `\` and NUL; control characters (C0,
/// DEL, C1); invisible formatting characters that make a name display as something else
/// (Unicode's whole format category, Cf: bidi overrides and isolates such as U+202E,
/// zero-width characters, U+FEFF, the soft hyphen, tag characters); and
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
            c if is_format_character(c) => {
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

/// Unicode's format characters (general category Cf, Unicode 15.1): none is seen, and each
/// changes how the text around it shows (direction, joining, hyphenation) or hides text
/// (tag characters). Written out because no dependency of ours carries the category.
fn is_format_character(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

pub(super) fn parse_file(
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
        (None, Some(p)) => filename_from_path(loc, p)?,
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

/// The filename of an entry that gives a `"path"` and no `"filename"`: the path's last
/// component (dev reads the entry so, and seal writes it into the bundle so).
pub(super) fn filename_from_path(loc: &str, path: &str) -> Result<String, CredentialsError> {
    std::path::Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            invalid(
                format!("{loc}.\"filename\""),
                "is required (path has no file name)",
            )
        })
}

pub(super) fn too_big(loc: &str, max_size: u64) -> CredentialsError {
    invalid(
        loc,
        format!("file is larger than max_size_bytes ({max_size})"),
    )
}

/// Moves bytes into a `SecretBytes` whose allocation is exactly their length, so the
/// conversion to a boxed slice does not reallocate and leave an unzeroized copy behind.
pub(super) fn into_secret(mut buf: Vec<u8>) -> SecretBytes {
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
mod tests {
    use super::check_filename;

    #[test]
    fn check_filename_table() {
        let ok = [
            "id_ed25519",
            ".npmrc",
            "résumé.pdf",
            "キー.pem",
            "a b.txt",
            "a..b",
            "-x",
            &"a".repeat(255),
        ];
        for name in ok {
            assert!(check_filename(name).is_ok(), "{name:?}");
        }
        let bad = [
            "",
            ".",
            "..",
            "a/b",
            "/",
            "a\\b",
            "a\0b",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{1b}[31m",
            "a\u{202e}b",
            "a\u{2066}b",
            "a\u{200b}b",
            "\u{feff}a",
            "a\u{ff0f}b",
            "a\u{2215}b",
            "a\u{2044}b",
            &"a".repeat(256),
            &"é".repeat(128),
        ];
        for name in bad {
            assert!(check_filename(name).is_err(), "{name:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn accepted_filenames_are_single_components(name in "\\PC{0,40}|[./\\\\a\u{202e}\u{ff0f}]{0,6}") {
            if check_filename(&name).is_ok() {
                let p = std::path::Path::new(&name);
                let mut comps = p.components();
                proptest::prop_assert!(matches!(comps.next(), Some(std::path::Component::Normal(_))));
                proptest::prop_assert!(comps.next().is_none());
            }
        }
    }
}
