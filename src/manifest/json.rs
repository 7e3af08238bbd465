//! The manifest's JSON: serde_json's `Value`, built by a visitor of our own that refuses a
//! key repeated in an object, at any depth. serde_json's own `Value` keeps the last one
//! silently, so `"delivery": "env", "delivery": "runtime_object"` or a second, empty
//! `"connections"` changed what the manifest declares with nothing said (the credential
//! document refuses duplicates too).
//!
//! The walk goes on past a duplicate, so a syntax error later in the text is still the one
//! reported, and so the connection holding the duplicate is known by its id once its
//! object has been read (the id may come after the duplicate).

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{invalid, is_safe_id, quoted, ManifestError};

/// Parses `bytes` as one JSON value, refusing a duplicate key with its path.
pub(super) fn parse(bytes: &[u8]) -> Result<Value, ManifestError> {
    let mut walk = Walk::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = ValueSeed(&mut walk)
        .deserialize(&mut de)
        .and_then(|doc| de.end().map(|()| doc));
    // The manifest holds no secrets, so serde_json's own message is a fine detail.
    let doc = parsed.map_err(|e| ManifestError::Syntax {
        detail: e.to_string(),
    })?;
    match walk.duplicate {
        Some(path) => Err(invalid(
            render(&path, walk.duplicate_id.as_deref()),
            "duplicate key",
        )),
        None => Ok(doc),
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Default)]
struct Walk {
    /// Where the walk is: the keys and indices from the top.
    path: Vec<Segment>,
    /// The first duplicate key's path, the key last.
    duplicate: Option<Vec<Segment>>,
    /// The id of the connection holding it, when it is in one and the id is printable.
    duplicate_id: Option<String>,
}

impl Walk {
    /// Whether the walk is at `connections[i]` and the duplicate is in there.
    fn in_connection_holding_duplicate(&self) -> bool {
        let at_connection = matches!(
            self.path.as_slice(),
            [Segment::Key(top), Segment::Index(_)] if top == "connections"
        );
        at_connection
            && self
                .duplicate
                .as_ref()
                .is_some_and(|dup| dup.len() > self.path.len() && dup.starts_with(&self.path))
    }
}

/// `connections[0] (id "gh").delivery`, in the form of the manifest's other locations;
/// a key that is not a plain name is quoted, `input_schema["a b"]`.
fn render(path: &[Segment], id: Option<&str>) -> String {
    let mut out = String::new();
    for (i, segment) in path.iter().enumerate() {
        match segment {
            Segment::Key(key) if is_safe_id(key) => {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Key(key) => out.push_str(&format!("[{}]", quoted(key))),
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
        if let (1, Some(id)) = (i, id) {
            out.push_str(&format!(" (id {id:?})"));
        }
    }
    out
}

/// Builds a `Value` the way serde_json's own `Deserialize` does, noting duplicates.
struct ValueSeed<'w>(&'w mut Walk);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        // serde_json's recursion limit (128 levels) applies to this walk as to its own.
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json never produces a NaN or an infinity; its own Value maps them to null.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let walk = self.0;
        let mut items = Vec::new();
        loop {
            walk.path.push(Segment::Index(items.len()));
            let next = seq.next_element_seed(ValueSeed(&mut *walk));
            walk.path.pop();
            match next? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let walk = self.0;
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            walk.path.push(Segment::Key(key));
            let value = map.next_value_seed(ValueSeed(&mut *walk));
            let Some(Segment::Key(key)) = walk.path.pop() else {
                unreachable!("the walk pushed this key")
            };
            let value = value?;
            if members.contains_key(&key) {
                if walk.duplicate.is_none() {
                    let mut at = walk.path.clone();
                    at.push(Segment::Key(key));
                    walk.duplicate = Some(at);
                }
                // The parse fails; which of the two is kept does not matter.
                continue;
            }
            members.insert(key, value);
        }
        if walk.duplicate_id.is_none() && walk.in_connection_holding_duplicate() {
            walk.duplicate_id = members
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| is_safe_id(id))
                .map(str::to_owned);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Manifest;
    use super::*;

    fn location_of_duplicate(doc: &str) -> String {
        match Manifest::parse(doc.as_bytes()) {
            Err(ManifestError::Invalid { location, problem }) => {
                assert_eq!(problem, "duplicate key", "{doc}");
                location
            }
            other => panic!("{doc}: expected a duplicate key, got {other:?}"),
        }
    }

    #[test]
    fn a_repeated_key_is_refused_with_its_path() {
        let field = r#"[{"name":"token","label":"T","secret":true}]"#;
        let cases = [
            // The reviewer's: a second, empty list of connections (read as 0 connections),
            // and a second delivery in one connection (the later one won).
            (
                format!(
                    r#"{{"connections":[{{"id":"gh","display_name":"GH","auth_mode":"secret_input",
                       "fields":{field}}}], "connections":[]}}"#
                ),
                "connections",
            ),
            (
                format!(
                    r#"{{"connections":[{{"id":"gh","display_name":"GH","auth_mode":"secret_input",
                       "delivery":"env","delivery":"runtime_object","fields":{field}}}]}}"#
                ),
                r#"connections[0] (id "gh").delivery"#,
            ),
            // The id is found when it comes after the duplicate, and in a later connection.
            (
                r#"{"connections":[{"id":"a","display_name":"A","auth_mode":"browser_login"},
                   {"auth_mode":"secret_input","fields":[{"name":"x","name":"y"}],"id":"b"}]}"#
                    .to_owned(),
                r#"connections[1] (id "b").fields[0].name"#,
            ),
            // An id that is not a valid one is not printed.
            (
                r#"{"connections":[{"id":"../x","id":"y"}]}"#.to_owned(),
                "connections[0].id",
            ),
            // Keys we do not read, at any depth; a key that is not a plain name is quoted.
            (
                r#"{"input_schema":{"properties":{"a b":{},"a b":{}}}}"#.to_owned(),
                r#"input_schema.properties["a b"]"#,
            ),
            (
                r#"{"runtime":{"hooks":[1,{"k":1,"k":1}]}}"#.to_owned(),
                "runtime.hooks[1].k",
            ),
            (r#"{"":1,"":2}"#.to_owned(), r#"[""]"#),
            // Only the first is named.
            (
                r#"{"runtime":{"cpu":1,"cpu":2},"entrypoint":"a","entrypoint":"b"}"#.to_owned(),
                "runtime.cpu",
            ),
        ];
        for (doc, location) in cases {
            assert_eq!(location_of_duplicate(&doc), location, "{doc}");
        }
    }

    #[test]
    fn a_syntax_error_after_a_duplicate_is_still_a_syntax_error() {
        let err = Manifest::parse(br#"{"a":1,"a":2,"#).expect_err("syntax");
        assert!(matches!(err, ManifestError::Syntax { .. }), "{err:?}");
    }

    #[test]
    fn documents_without_duplicates_read_as_serde_json_reads_them() {
        for doc in [
            r#"{"connections":[],"runtime":{"sandbox_template":"desktop"}}"#,
            r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}],"c":[[],{}],"d":null}"#,
            r#"[1, -1, 18446744073709551615, -9223372036854775808, 1.5, -0.0, 1e300, 2E-3]"#,
            r#""caf\u00e9 \"q\" \\ \/ \n \ud83d\ude00""#,
            r#"  true "#,
            "false",
            "null",
        ] {
            let ours = parse(doc.as_bytes()).unwrap_or_else(|e| panic!("{doc}: {e}"));
            let theirs: Value = serde_json::from_str(doc).expect("serde_json");
            assert_eq!(ours, theirs, "{doc}");
        }
        for bad in ["", "{", "[1,]", r#"{"a":1} x"#, "1e400", "[01]"] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(ManifestError::Syntax { .. })),
                "{bad}"
            );
        }
    }

    /// Any JSON value (whose objects have no duplicates, being maps).
    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,8}|[\"\\\\\u{0}-\u{1f}\u{fffd}]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-c]{0,2}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn any_document_without_duplicates_reads_as_serde_json_reads_it(value in any_value()) {
            let text = serde_json::to_string(&value).expect("serialize");
            let ours = parse(text.as_bytes()).expect("parse");
            let theirs: Value = serde_json::from_str(&text).expect("serde_json");
            proptest::prop_assert_eq!(ours, theirs);
        }
    }
}
