//! Rewrites a request body by splicing bytes, never by building a JSON
//! tree: the top-level `model` and `stream_options` values are located as
//! raw slices of the body and replaced; every other byte is copied as sent.
//! Peak memory is the body plus one copy, whatever its shape (a tree of
//! `[1,1,…]` costs about 30 bytes per byte of input).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The top-level fields a rewrite changes, as slices of the body.
#[derive(Default)]
struct Fields<'a> {
    model: Option<&'a RawValue>,
    stream_options: Option<&'a RawValue>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Model,
    StreamOptions,
    IncludeUsage,
    Other,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "model" => Key::Model,
            "stream_options" => Key::StreamOptions,
            "include_usage" => Key::IncludeUsage,
            _ => Key::Other,
        })
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fields<'de>, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Model => fields.model = Some(map.next_value()?),
                Key::StreamOptions => fields.stream_options = Some(map.next_value()?),
                Key::IncludeUsage | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// The fields of an object kept as raw text (name re-encoded, value as
/// sent), leaving out `include_usage`.
struct OtherOptions(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for OtherOptions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<OtherOptions, D::Error> {
        deserializer.deserialize_map(OtherOptionsVisitor)
    }
}

struct OtherOptionsVisitor;

impl<'de> Visitor<'de> for OtherOptionsVisitor {
    type Value = OtherOptions;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stream options")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OtherOptions, A::Error> {
        let mut kept = Vec::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'_, str>>()? {
            let value: Box<RawValue> = map.next_value()?;
            if key != "include_usage" {
                let name = serde_json::to_string(&key).map_err(de::Error::custom)?;
                kept.push((name, value));
            }
        }
        Ok(OtherOptions(kept))
    }
}

/// `stream_options` with `include_usage: true` and every other option the
/// client sent; a value that is not an object (`null`, `false`, a string)
/// is replaced as if the client had sent none.
fn options_with_usage(sent: Option<&RawValue>) -> Result<String, serde_json::Error> {
    // Only an object has options to keep (a raw value starts at its first
    // byte: `{` is an object).
    let kept = match sent {
        Some(raw) if raw.get().starts_with('{') => {
            serde_json::from_str::<OtherOptions>(raw.get())?.0
        }
        _ => Vec::new(),
    };
    let mut out = String::from("{");
    for (name, value) in &kept {
        out.push_str(name);
        out.push(':');
        out.push_str(value.get());
        out.push(',');
    }
    out.push_str("\"include_usage\":true}");
    Ok(out)
}

/// Where a raw value sits in the body it was read from.
fn span(body: &[u8], raw: &RawValue) -> (usize, usize) {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    (start, start + raw.get().len())
}

/// The body with `model` set to `model` (when given; only if present) and
/// `stream_options.include_usage` set (when `include_usage`). `None` when
/// nothing changes.
pub fn splice(
    body: &[u8],
    model: Option<&str>,
    include_usage: bool,
) -> Result<Option<Vec<u8>>, serde_json::Error> {
    let fields: Fields<'_> = serde_json::from_slice(body)?;
    // (start, end, replacement), in body order.
    let mut edits: Vec<(usize, usize, String)> = Vec::with_capacity(2);
    if let (Some(model), Some(raw)) = (model, fields.model) {
        let (start, end) = span(body, raw);
        edits.push((start, end, serde_json::to_string(model)?));
    }
    if include_usage {
        let options = options_with_usage(fields.stream_options)?;
        match fields.stream_options {
            Some(raw) => {
                let (start, end) = span(body, raw);
                edits.push((start, end, options));
            }
            None => {
                // Appended before the object's closing brace (the body was
                // scanned: an object with at least `model`).
                let close = body
                    .iter()
                    .rposition(|b| *b == b'}')
                    .ok_or_else(|| de::Error::custom("no closing brace"))?;
                let empty = body[..close]
                    .iter()
                    .rev()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|b| *b == b'{');
                let field = format!(
                    "{}\"stream_options\":{options}",
                    if empty { "" } else { "," }
                );
                edits.push((close, close, field));
            }
        }
    }
    if edits.is_empty() {
        return Ok(None);
    }
    edits.sort_by_key(|(start, _, _)| *start);
    let added: usize = edits.iter().map(|(_, _, text)| text.len()).sum();
    let mut out = Vec::with_capacity(body.len() + added);
    let mut at = 0;
    for (start, end, text) in &edits {
        out.extend_from_slice(&body[at..*start]);
        out.extend_from_slice(text.as_bytes());
        at = *end;
    }
    out.extend_from_slice(&body[at..]);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn spliced(body: &str, model: Option<&str>, usage: bool) -> Value {
        let out = splice(body.as_bytes(), model, usage).unwrap().unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn renames_the_model_and_keeps_every_other_byte() {
        let body =
            r#"{"model" : "a", "messages":[{"role":"user","content":"x\u00e9"}], "n": 1.50}"#;
        let out = splice(body.as_bytes(), Some("up/b\"c"), false)
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"model" : "up/b\"c", "messages":[{"role":"user","content":"x\u00e9"}], "n": 1.50}"#
        );
    }

    #[test]
    fn adds_usage_to_options_or_appends_them() {
        assert_eq!(
            spliced(r#"{"model":"a","stream":true}"#, None, true),
            json!({"model":"a","stream":true,"stream_options":{"include_usage":true}})
        );
        assert_eq!(
            spliced(
                r#"{"model":"a","stream_options":{"include_obfuscation":false,"include_usage":false}}  "#,
                Some("b"),
                true
            ),
            json!({"model":"b","stream_options":{"include_obfuscation":false,"include_usage":true}})
        );
        for sent in ["null", "false", "\"x\"", "[1,2]", "7"] {
            assert_eq!(
                spliced(
                    &format!(r#"{{"stream_options":{sent},"model":"a"}}"#),
                    None,
                    true
                ),
                json!({"model":"a","stream_options":{"include_usage":true}})
            );
        }
    }

    #[test]
    fn an_escaped_key_is_the_key() {
        assert_eq!(
            spliced(r#"{"mod\u0065l":"a"}"#, Some("b"), false),
            json!({"model":"b"})
        );
    }

    #[test]
    fn nothing_to_change_is_none() {
        assert!(splice(br#"{"model":"a"}"#, None, false).unwrap().is_none());
    }
}
