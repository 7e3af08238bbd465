//! The JSON layer of the credential document: values are read as borrowed raw text
//! (serde_json's `RawValue`), objects one level at a time when the parser asks for them,
//! and strings are decoded here, straight into their final allocation.
//!
//! Why strings are not left to serde_json: a string with an escape (`\"`, `\\`, `\/`, `\n`,
//! `\u00e9`, ...) is decoded into the deserializer's scratch buffer, which grows by
//! reallocation and is freed without being zeroized, so a secret would stay in freed heap
//! memory. Skipping a value, which is all `RawValue` does, checks it without decoding it.
//! [`JsonStr::to_secret`] first measures the decoded string, then decodes it once into an
//! allocation of exactly that size, which becomes the `SecretString`: no other copy is
//! made.
//!
//! The decoder accepts exactly what serde_json accepts in a string (RFC 8259: the escapes
//! `\" \\ \/ \b \f \n \r \t \uXXXX`, surrogates only in pairs, no control characters), and
//! produces the same text; a property test checks both against serde_json.

use serde::de::{self, Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;
use zeroize::Zeroize;

use crate::secret::SecretString;

/// One JSON value, classified without decoding it.
#[derive(Clone, Copy)]
pub(super) enum Value<'a> {
    Null,
    Bool,
    /// `Some` for integers that fit a `u64`.
    Number(Option<u64>),
    Str(JsonStr<'a>),
    Array,
    Object(&'a RawValue),
}

impl<'a> Value<'a> {
    /// Classifies a value that serde_json has already checked (it came from a `RawValue`).
    pub(super) fn of(raw: &'a RawValue) -> Self {
        let text = raw.get().trim_ascii();
        match text.as_bytes().first() {
            Some(b'"') if text.len() >= 2 => Value::Str(JsonStr::new(&text[1..text.len() - 1])),
            Some(b'{') => Value::Object(raw),
            Some(b'[') => Value::Array,
            Some(b't' | b'f') => Value::Bool,
            Some(b'n') => Value::Null,
            // A number; serde_json's own reading of it, like `u64`'s `Deserialize`.
            _ => Value::Number(serde_json::from_str::<u64>(text).ok()),
        }
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool => "a boolean",
            Value::Number(_) => "a number",
            Value::Str(_) => "a string",
            Value::Array => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Calls `each` with every member of `object` in document order (duplicates included),
/// the value as raw text, and stops at the first error `each` returns: a member can be
/// refused as soon as it is seen, and nothing is collected. `object` must be a JSON object
/// that serde_json has already checked; the outer error, serde_json's, is then impossible.
pub(super) fn for_each_member<'a, E>(
    object: &'a RawValue,
    mut each: impl FnMut(String, &'a RawValue) -> Result<(), E>,
) -> Result<Result<(), E>, serde_json::Error> {
    struct Walk<'w, F, E> {
        each: &'w mut F,
        stopped: &'w mut Option<E>,
    }

    impl<'de, F, E> Visitor<'de> for Walk<'_, F, E>
    where
        F: FnMut(String, &'de RawValue) -> Result<(), E>,
    {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            // Keys are names, not secrets: serde_json may decode them in its scratch buffer.
            while let Some(key) = map.next_key::<String>()? {
                let value: &'de RawValue = map.next_value()?;
                if let Err(e) = (self.each)(key, value) {
                    *self.stopped = Some(e);
                    return Err(de::Error::custom("stopped"));
                }
            }
            Ok(())
        }
    }

    let mut stopped = None;
    let mut de = serde_json::Deserializer::from_str(object.get());
    let walked = de.deserialize_map(Walk {
        each: &mut each,
        stopped: &mut stopped,
    });
    match (walked, stopped) {
        (_, Some(e)) => Ok(Err(e)),
        (Ok(()), None) => Ok(Ok(())),
        (Err(e), None) => Err(e),
    }
}

/// Why a string's text is not a JSON string. Never carries any of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum BadString {
    #[error("an invalid escape")]
    Escape,
    #[error("a \\u escape of an unpaired surrogate")]
    LoneSurrogate,
    #[error("an unescaped control character or quote")]
    Unescaped,
}

/// The text between a JSON string's quotes, escapes not yet decoded.
#[derive(Clone, Copy)]
pub(super) struct JsonStr<'a>(&'a str);

impl<'a> JsonStr<'a> {
    /// The text between the quotes of a JSON string literal, as written.
    pub(super) fn new(inner: &'a str) -> Self {
        JsonStr(inner)
    }

    /// The text itself when it has no escape (decoding would change nothing).
    pub(super) fn verbatim(self) -> Option<&'a str> {
        (!self.0.contains('\\')).then_some(self.0)
    }

    /// The length in bytes of the decoded string.
    pub(super) fn decoded_len(self) -> Result<usize, BadString> {
        let mut count = Count(0);
        decode(self.0, &mut count)?;
        Ok(count.0)
    }

    /// Decodes into a secret: one allocation, of exactly the decoded size, that becomes the
    /// `SecretString` (zeroized on drop); nothing else holds the text.
    pub(super) fn to_secret(self) -> Result<SecretString, BadString> {
        Ok(SecretString::from(self.decode_exact()?))
    }

    /// Decodes a string that is not a secret (a token type, a filename, a path).
    pub(super) fn to_plain(self) -> Result<String, BadString> {
        self.decode_exact()
    }

    fn decode_exact(self) -> Result<String, BadString> {
        let mut out = Vec::with_capacity(self.decoded_len()?);
        if let Err(e) = decode(self.0, &mut out) {
            out.zeroize();
            return Err(e);
        }
        // Never fails: the input is UTF-8 and every escape decodes to a whole scalar value.
        String::from_utf8(out).map_err(|e| {
            e.into_bytes().zeroize();
            BadString::Escape
        })
    }
}

/// Where decoded bytes go: counted, or written.
trait Sink {
    fn bytes(&mut self, bytes: &[u8]);
    fn byte(&mut self, byte: u8);
}

struct Count(usize);

impl Sink for Count {
    fn bytes(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn byte(&mut self, _: u8) {
        self.0 += 1;
    }
}

/// Written into capacity reserved beforehand: never reallocates (a reallocation would free
/// a copy of what was written so far without zeroizing it).
impl Sink for Vec<u8> {
    fn bytes(&mut self, bytes: &[u8]) {
        debug_assert!(self.capacity() - self.len() >= bytes.len());
        self.extend_from_slice(bytes);
    }
    fn byte(&mut self, byte: u8) {
        debug_assert!(self.capacity() > self.len());
        self.push(byte);
    }
}

/// Decodes the text between a JSON string's quotes into `out`.
fn decode(inner: &str, out: &mut impl Sink) -> Result<(), BadString> {
    let b = inner.as_bytes();
    let mut i = 0;
    // Start of the run of plain bytes not yet written.
    let mut run = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                out.bytes(&b[run..i]);
                let escape = *b.get(i + 1).ok_or(BadString::Escape)?;
                i += 2;
                match escape {
                    b'"' => out.byte(b'"'),
                    b'\\' => out.byte(b'\\'),
                    b'/' => out.byte(b'/'),
                    b'b' => out.byte(0x08),
                    b'f' => out.byte(0x0c),
                    b'n' => out.byte(b'\n'),
                    b'r' => out.byte(b'\r'),
                    b't' => out.byte(b'\t'),
                    b'u' => {
                        let unit = hex4(b, i)?;
                        i += 4;
                        let scalar = match unit {
                            0xD800..=0xDBFF => {
                                // A leading surrogate: its trailing half must follow.
                                if b.get(i) != Some(&b'\\') || b.get(i + 1) != Some(&b'u') {
                                    return Err(BadString::LoneSurrogate);
                                }
                                let low = hex4(b, i + 2)?;
                                if !(0xDC00..=0xDFFF).contains(&low) {
                                    return Err(BadString::LoneSurrogate);
                                }
                                i += 6;
                                0x1_0000 + ((unit - 0xD800) << 10 | (low - 0xDC00))
                            }
                            0xDC00..=0xDFFF => return Err(BadString::LoneSurrogate),
                            unit => unit,
                        };
                        push_utf8(out, scalar);
                    }
                    _ => return Err(BadString::Escape),
                }
                run = i;
            }
            b'"' => return Err(BadString::Unescaped),
            c if c < 0x20 => return Err(BadString::Unescaped),
            _ => i += 1,
        }
    }
    out.bytes(&b[run..]);
    Ok(())
}

/// The four hex digits at `b[at..at + 4]`.
fn hex4(b: &[u8], at: usize) -> Result<u32, BadString> {
    let digits = b.get(at..at + 4).ok_or(BadString::Escape)?;
    digits.iter().try_fold(0u32, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(BadString::Escape),
        };
        Ok(n << 4 | u32::from(v))
    })
}

/// UTF-8 of a scalar value (not a surrogate, at most U+10FFFF), byte by byte.
fn push_utf8(out: &mut impl Sink, c: u32) {
    match c {
        0..=0x7F => out.byte(c as u8),
        0x80..=0x7FF => {
            out.byte(0xC0 | (c >> 6) as u8);
            out.byte(0x80 | (c & 0x3F) as u8);
        }
        0x800..=0xFFFF => {
            out.byte(0xE0 | (c >> 12) as u8);
            out.byte(0x80 | ((c >> 6) & 0x3F) as u8);
            out.byte(0x80 | (c & 0x3F) as u8);
        }
        _ => {
            out.byte(0xF0 | (c >> 18) as u8);
            out.byte(0x80 | ((c >> 12) & 0x3F) as u8);
            out.byte(0x80 | ((c >> 6) & 0x3F) as u8);
            out.byte(0x80 | (c & 0x3F) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ExposeSecret;

    fn decoded(inner: &str) -> Result<String, BadString> {
        JsonStr::new(inner).to_plain()
    }

    #[test]
    fn decode_table() {
        let ok: &[(&str, &str)] = &[
            ("", ""),
            ("plain", "plain"),
            (r#"\"\\\/\b\f\n\r\t"#, "\"\\/\u{8}\u{c}\n\r\t"),
            (r"caf\u00e9", "café"),
            (r"\u00E9\u00e9", "éé"),
            (r"\u0000", "\0"),
            (r"\u20AC", "€"),
            (r"\ud83d\ude00", "😀"),
            (r"\uDBFF\uDFFF", "\u{10FFFF}"),
            (r"a\u0041b", "aAb"),
            ("é€😀 raw", "é€😀 raw"),
            ("\u{7f}", "\u{7f}"),
        ];
        for (inner, want) in ok {
            assert_eq!(decoded(inner).as_deref(), Ok(*want), "{inner:?}");
            assert_eq!(
                JsonStr::new(inner).decoded_len(),
                Ok(want.len()),
                "{inner:?}"
            );
        }
        let bad: &[(&str, BadString)] = &[
            (r"\", BadString::Escape),
            (r"\q", BadString::Escape),
            (r"\x41", BadString::Escape),
            (r"\u12", BadString::Escape),
            (r"\u12g4", BadString::Escape),
            (r"\ud83d", BadString::LoneSurrogate),
            (r"\ud83dx", BadString::LoneSurrogate),
            (r"\ud83d\n", BadString::LoneSurrogate),
            (r"\ud83d\u0041", BadString::LoneSurrogate),
            (r"\ud83d\ud83d", BadString::LoneSurrogate),
            (r"\ude00", BadString::LoneSurrogate),
            (r"\ud83d\u12", BadString::Escape),
            ("a\"b", BadString::Unescaped),
            ("a\nb", BadString::Unescaped),
            ("\u{1f}", BadString::Unescaped),
        ];
        for (inner, want) in bad {
            assert_eq!(decoded(inner), Err(*want), "{inner:?}");
        }
    }

    #[test]
    fn secrets_are_allocated_at_their_exact_size() {
        for inner in ["", "sk-plain", r"sk-caf\u00e9\n\ud83d\ude00\/"] {
            let len = JsonStr::new(inner).decoded_len().expect("valid");
            let secret = JsonStr::new(inner).to_secret().expect("valid");
            assert_eq!(secret.expose_secret().len(), len);
            assert_eq!(secret.expose_secret(), decoded(inner).expect("valid"));
        }
    }

    #[test]
    fn values_are_classified_without_decoding() {
        let doc: &RawValue =
            serde_json::from_str(r#"{"s": "a\u00e9", "n": 7, "neg": -1, "f": 1.5, "big": 18446744073709551616, "t": true, "z": null, "a": [1], "o": {}}"#)
                .expect("json");
        let mut kinds: Vec<(String, &str, Option<u64>)> = Vec::new();
        for_each_member(doc, |k, v| {
            let v = Value::of(v);
            let n = match v {
                Value::Number(n) => n,
                _ => None,
            };
            kinds.push((k, v.kind(), n));
            Ok::<(), ()>(())
        })
        .expect("object")
        .expect("walked");
        let want = [
            ("s", "a string", None),
            ("n", "a number", Some(7)),
            ("neg", "a number", None),
            ("f", "a number", None),
            ("big", "a number", None),
            ("t", "a boolean", None),
            ("z", "null", None),
            ("a", "an array", None),
            ("o", "an object", None),
        ];
        assert_eq!(kinds.len(), want.len());
        for ((k, kind, n), (wk, wkind, wn)) in kinds.iter().zip(want) {
            assert_eq!((k.as_str(), *kind, *n), (wk, wkind, wn));
        }
    }

    /// Pieces of a string body: raw characters (quotes, backslashes and control characters
    /// among them), every escape, `\u` of any 16-bit unit (surrogates often) in either case,
    /// and broken escapes.
    fn piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<char>().prop_map(String::from),
            "[a-z\"\\\\\u{0}-\u{1f}é€😀]".prop_map(String::from),
            prop::sample::select(vec![
                "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"
            ])
            .prop_map(String::from),
            (any::<u16>(), any::<bool>()).prop_map(|(u, upper)| if upper {
                format!("\\u{u:04X}")
            } else {
                format!("\\u{u:04x}")
            }),
            (0xD800u16..0xE000).prop_map(|u| format!("\\u{u:04x}")),
            prop::sample::select(vec!["\\", "\\u", "\\u12", "\\uZZZZ", "\\x", "\\U0041"])
                .prop_map(String::from),
        ]
    }

    proptest::proptest! {
        #[test]
        fn decodes_exactly_as_serde_json(pieces in proptest::collection::vec(piece(), 0..12)) {
            let body: String = pieces.concat();
            let theirs = serde_json::from_str::<String>(&format!("\"{body}\"")).ok();
            let ours = decoded(&body).ok();
            proptest::prop_assert_eq!(&ours, &theirs, "body {:?}", body);
            if let Some(text) = theirs {
                let secret = JsonStr::new(&body).to_secret().expect("valid");
                proptest::prop_assert_eq!(secret.expose_secret(), text.as_str());
            }
        }

        #[test]
        fn round_trips_what_serde_json_writes(text in "\\PC*|[\u{0}-\u{7f}]*|.*") {
            let literal = serde_json::to_string(&text).expect("json");
            let inner = &literal[1..literal.len() - 1];
            proptest::prop_assert_eq!(decoded(inner).ok(), Some(text));
        }
    }
}
