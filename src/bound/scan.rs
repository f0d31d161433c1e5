//! One pass over a request body: the fields the gateway reads, and whether
//! the request names input the gateway cannot see.
//!
//! Key names are compared after JSON unescaping (`"file\u005fid"` is
//! `file_id`), as the upstream's parser will read them. Nothing is copied
//! into a JSON tree except the few small top-level values kept.
//!
//! Every nested value is visited (strings are validated, not skipped): in
//! `benches/admission.rs` (group `bound`) this costs 0.92× the old
//! six-field head parse on a 200-byte chat, 1.15× on 1 MB, 1.77× on 64 KB
//! of image parts. Skipping nested values unless a marker (`url"`,
//! `file_id"`, `\u`, …) is in the bytes was measured slower: the searches
//! cost more than the walk (1 MB: 236 µs against 150 µs).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The scalar methods of a visitor that looks only inside objects and
/// lists: every scalar is accepted and ignored, answering `$value`
/// (`()` by default).
macro_rules! ignore_scalars {
    () => {
        ignore_scalars!((), ());
    };
    ($ty:ty, $value:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<$ty, E> {
            Ok($value)
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$ty, E> {
            Ok($value)
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<$ty, E> {
            Ok($value)
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$ty, E> {
            Ok($value)
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$ty, E> {
            Ok($value)
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$ty, E> {
            Ok($value)
        }
    };
}

/// A numeric request field (`max_tokens`, `n`, …), read as leniently as a
/// lenient upstream would read it: integers, floats (rounded up), numeric
/// strings and booleans all count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Count {
    /// Absent or `null`.
    #[default]
    Absent,
    /// A number (saturating); 0 and negatives are kept as 0.
    Value(u64),
    /// Present, but no upstream could read a count from it.
    Unreadable,
}

impl Count {
    /// The count when it is above 0.
    pub fn positive(self) -> Option<u64> {
        match self {
            Count::Value(n) if n > 0 => Some(n),
            _ => None,
        }
    }

    fn from_f64(value: f64) -> Count {
        if value.is_nan() {
            Count::Unreadable
        } else if value <= 0.0 {
            Count::Value(0)
        } else if value >= u64::MAX as f64 {
            Count::Value(u64::MAX)
        } else {
            Count::Value(value.ceil() as u64)
        }
    }
}

/// What the scan found in a request body.
#[derive(Debug, Default)]
pub struct Shape {
    pub model: Option<Scalar>,
    pub stream: Option<Scalar>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Count,
    pub max_completion_tokens: Count,
    pub max_output_tokens: Count,
    pub n: Count,
    pub best_of: Count,
    /// Responses' `max_tool_calls`.
    pub max_tool_calls: Count,
    /// A server-side tool is offered (its calls may carry fees).
    pub server_tool: bool,
    /// `background` is present and not `null`/`false`.
    pub background: bool,
    /// The first field that names input the gateway cannot see (an id, a
    /// URL, a stored conversation or prompt, a server-side tool).
    pub hidden_input: Option<&'static str>,
}

/// Why a body could not be scanned.
#[derive(Debug)]
pub enum ScanError {
    /// Not JSON (syntax, or trailing bytes).
    Syntax(serde_json::Error),
    /// JSON, but not an object.
    NotAnObject,
    /// A top-level field the gateway reads appears twice: upstreams differ
    /// on which copy wins, so the request cannot be metered.
    Duplicate(&'static str),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Syntax(error) => write!(f, "{error}"),
            ScanError::NotAnObject => f.write_str("not a JSON object"),
            ScanError::Duplicate(field) => write!(f, "'{field}' appears twice"),
        }
    }
}

/// Scans a request body.
pub fn scan(body: &[u8]) -> Result<Shape, ScanError> {
    let mut shape = Shape::default();
    let mut duplicate = None;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let scanned = TopSeed {
        shape: &mut shape,
        duplicate: &mut duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    if let Some(field) = duplicate {
        return Err(ScanError::Duplicate(field));
    }
    match scanned {
        Ok(()) => Ok(shape),
        Err(error) if error.classify() == serde_json::error::Category::Data => {
            Err(ScanError::NotAnObject)
        }
        Err(error) => Err(ScanError::Syntax(error)),
    }
}

// === Top level ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum TopKey {
    Model,
    Stream,
    StreamOptions,
    MaxTokens,
    MaxCompletionTokens,
    MaxOutputTokens,
    N,
    BestOf,
    MaxToolCalls,
    Background,
    /// Names stored input: `previous_response_id`, `conversation`,
    /// `mcp_servers`, `web_search_options`.
    Stored(&'static str),
    Prompt,
    Tools,
    Other,
}

impl TopKey {
    fn of(name: &str) -> TopKey {
        match name {
            "model" => TopKey::Model,
            "stream" => TopKey::Stream,
            "stream_options" => TopKey::StreamOptions,
            "max_tokens" => TopKey::MaxTokens,
            "max_completion_tokens" => TopKey::MaxCompletionTokens,
            "max_output_tokens" => TopKey::MaxOutputTokens,
            "n" => TopKey::N,
            "best_of" => TopKey::BestOf,
            "max_tool_calls" => TopKey::MaxToolCalls,
            "background" => TopKey::Background,
            "previous_response_id" => TopKey::Stored("previous_response_id"),
            "conversation" => TopKey::Stored("conversation"),
            "mcp_servers" => TopKey::Stored("mcp_servers"),
            "web_search_options" => TopKey::Stored("web_search_options"),
            "prompt" => TopKey::Prompt,
            "tools" => TopKey::Tools,
            _ => TopKey::Other,
        }
    }

    /// The field's name and its bit in the duplicate check.
    fn tracked(self) -> Option<(&'static str, u32)> {
        Some(match self {
            TopKey::Model => ("model", 0),
            TopKey::Stream => ("stream", 1),
            TopKey::StreamOptions => ("stream_options", 2),
            TopKey::MaxTokens => ("max_tokens", 3),
            TopKey::MaxCompletionTokens => ("max_completion_tokens", 4),
            TopKey::MaxOutputTokens => ("max_output_tokens", 5),
            TopKey::N => ("n", 6),
            TopKey::BestOf => ("best_of", 7),
            TopKey::Background => ("background", 8),
            TopKey::Stored(name) => (name, 9),
            TopKey::Prompt => ("prompt", 10),
            TopKey::Tools => ("tools", 11),
            TopKey::MaxToolCalls => ("max_tool_calls", 12),
            TopKey::Other => return None,
        })
    }
}

struct TopKeySeed;

impl<'de> DeserializeSeed<'de> for TopKeySeed {
    type Value = TopKey;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<TopKey, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TopKeySeed {
    type Value = TopKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<TopKey, E> {
        Ok(TopKey::of(key))
    }
}

struct TopSeed<'a> {
    shape: &'a mut Shape,
    duplicate: &'a mut Option<&'static str>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let shape = self.shape;
        let mut seen = 0u32;
        while let Some(key) = map.next_key_seed(TopKeySeed)? {
            if let Some((name, bit)) = key.tracked() {
                // `Stored` shares a bit; its names are distinct fields, so a
                // repeat of that bit is only a duplicate for the same name.
                if seen & (1 << bit) != 0 && !matches!(key, TopKey::Stored(_)) {
                    *self.duplicate = Some(name);
                    return Err(de::Error::custom("duplicate field"));
                }
                seen |= 1 << bit;
            }
            match key {
                TopKey::Model => shape.model = Some(map.next_value()?),
                TopKey::Stream => shape.stream = Some(map.next_value()?),
                TopKey::StreamOptions => shape.stream_options = Some(map.next_value()?),
                // (`Scalar` and `StreamOptions` skip nested lists and
                // objects without building them.)
                TopKey::MaxTokens => shape.max_tokens = map.next_value_seed(CountSeed)?,
                TopKey::MaxCompletionTokens => {
                    shape.max_completion_tokens = map.next_value_seed(CountSeed)?
                }
                TopKey::MaxOutputTokens => {
                    shape.max_output_tokens = map.next_value_seed(CountSeed)?
                }
                TopKey::N => shape.n = map.next_value_seed(CountSeed)?,
                TopKey::BestOf => shape.best_of = map.next_value_seed(CountSeed)?,
                TopKey::MaxToolCalls => shape.max_tool_calls = map.next_value_seed(CountSeed)?,
                TopKey::Background => {
                    let value: Scalar = map.next_value()?;
                    shape.background = !matches!(value, Scalar::Null | Scalar::Bool(false));
                }
                TopKey::Stored(name) => {
                    if map.next_value_seed(PresentSeed)? {
                        shape.hidden_input.get_or_insert(name);
                    }
                }
                TopKey::Prompt => map.next_value_seed(PromptSeed {
                    hidden: &mut shape.hidden_input,
                })?,
                TopKey::Tools => {
                    let mut server_tool = false;
                    map.next_value_seed(ToolsSeed {
                        hidden: &mut shape.hidden_input,
                        server_tool: &mut server_tool,
                    })?;
                    shape.server_tool |= server_tool;
                }
                TopKey::Other => map.next_value_seed(Walk {
                    hidden: &mut shape.hidden_input,
                })?,
            }
        }
        Ok(())
    }
}

// === Counts ===

struct CountSeed;

impl<'de> DeserializeSeed<'de> for CountSeed {
    type Value = Count;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Count, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CountSeed {
    type Value = Count;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a count")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Count, E> {
        Ok(Count::Value(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Count, E> {
        Ok(Count::Value(value.max(0) as u64))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Count, E> {
        Ok(Count::from_f64(value))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Count, E> {
        Ok(Count::Value(u64::from(value)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Count, E> {
        Ok(text
            .trim()
            .parse::<f64>()
            .map_or(Count::Unreadable, Count::from_f64))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
        Ok(Count::Absent)
    }

    fn visit_none<E: de::Error>(self) -> Result<Count, E> {
        Ok(Count::Absent)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Count::Unreadable)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        // With serde_json's `arbitrary_precision` (enabled in this build), a
        // float or an integer past 64 bits arrives as a one-entry map.
        let mut count = Count::Unreadable;
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'_, str>>()? {
            if first && key == NUMBER_TOKEN {
                let text: std::borrow::Cow<'_, str> = map.next_value()?;
                count = text
                    .parse::<f64>()
                    .map_or(Count::Unreadable, Count::from_f64);
            } else {
                map.next_value::<IgnoredAny>()?;
                count = Count::Unreadable;
            }
            first = false;
        }
        Ok(count)
    }
}

/// The key under which serde_json's `arbitrary_precision` passes a number.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

// === Scalars, without trees ===

/// A field's value where only a scalar matters. A list or an object is
/// walked and dropped, never built: a hostile `"model": [1,1,…]` costs no
/// tree (`serde_json::Value` takes about 30 bytes per byte of such input).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scalar {
    #[default]
    Null,
    Bool(bool),
    Str(String),
    Number,
    List,
    Object,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scalar, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(value))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(text.to_string()))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(text))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Scalar, E> {
        Ok(Scalar::Number)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Scalar, E> {
        Ok(Scalar::Number)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Number)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::List)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        let mut scalar = Scalar::Object;
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'_, str>>()? {
            map.next_value::<IgnoredAny>()?;
            // `arbitrary_precision` passes a number as a one-entry map.
            scalar = if first && key == NUMBER_TOKEN {
                Scalar::Number
            } else {
                Scalar::Object
            };
            first = false;
        }
        Ok(scalar)
    }
}

/// `stream_options`, as far as the gateway reads it: whether it is an
/// object, and its `include_usage` when that is a boolean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOptions {
    pub object: bool,
    pub include_usage: Option<bool>,
}

impl<'de> Deserialize<'de> for StreamOptions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StreamOptions, D::Error> {
        deserializer.deserialize_any(StreamOptionsVisitor)
    }
}

struct StreamOptionsVisitor;

impl<'de> Visitor<'de> for StreamOptionsVisitor {
    type Value = StreamOptions;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stream options")
    }

    ignore_scalars!(StreamOptions, StreamOptions::default());

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StreamOptions, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(StreamOptions::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StreamOptions, A::Error> {
        let mut options = StreamOptions {
            object: true,
            include_usage: None,
        };
        let mut first = true;
        let mut copies = 0;
        while let Some(key) = map.next_key::<std::borrow::Cow<'_, str>>()? {
            if first && key == NUMBER_TOKEN {
                map.next_value::<IgnoredAny>()?;
                return Ok(StreamOptions::default());
            }
            first = false;
            if key == "include_usage" {
                copies += 1;
                options.include_usage = match map.next_value::<Scalar>()? {
                    Scalar::Bool(value) => Some(value),
                    _ => None,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if copies > 1 {
            // Upstreams differ on which copy wins: taken as not asked, so
            // the rewrite leaves exactly one (`include_usage: true`).
            options.include_usage = None;
        }
        Ok(options)
    }
}

// === Presence of a stored-input field ===

/// Whether a value names something: not `null`, `false`, `""`, `[]` or `{}`.
struct PresentSeed;

impl<'de> DeserializeSeed<'de> for PresentSeed {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PresentSeed {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<bool, E> {
        Ok(value)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<bool, E> {
        Ok(!text.is_empty())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut any = false;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            any = true;
        }
        Ok(any)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut any = false;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            any = true;
        }
        Ok(any)
    }
}

// === `prompt`: text, or a stored prompt (an object with an id) ===

struct PromptSeed<'a> {
    hidden: &'a mut Option<&'static str>,
}

impl<'de> DeserializeSeed<'de> for PromptSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PromptSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a prompt")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.hidden.get_or_insert("prompt");
        Walk {
            hidden: self.hidden,
        }
        .visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Walk {
            hidden: self.hidden,
        }
        .visit_seq(seq)
    }

    ignore_scalars!();
}

// === `tools`: a server-side tool loads input the gateway cannot see ===

/// Tool types the client runs itself (their results come back in a later
/// request body, where they are counted).
fn client_side_tool(kind: &str) -> bool {
    matches!(
        kind,
        "function" | "custom" | "computer_use_preview" | "local_shell" | "shell" | "apply_patch"
    ) || kind.starts_with("bash_")
        || kind.starts_with("text_editor_")
        || kind.starts_with("computer_")
        || kind.starts_with("memory_")
}

struct ToolsSeed<'a> {
    hidden: &'a mut Option<&'static str>,
    server_tool: &'a mut bool,
}

impl<'de> DeserializeSeed<'de> for ToolsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ToolsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of tools")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(ToolSeed {
                hidden: &mut *self.hidden,
                server_tool: &mut *self.server_tool,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Walk {
            hidden: self.hidden,
        }
        .visit_map(map)
    }

    ignore_scalars!();
}

struct ToolSeed<'a> {
    hidden: &'a mut Option<&'static str>,
    server_tool: &'a mut bool,
}

impl<'de> DeserializeSeed<'de> for ToolSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ToolSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tool")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut walk = Walk {
            hidden: self.hidden,
        };
        while let Some(key) = map.next_key_seed(NestedKeySeed)? {
            if key == NestedKey::Type {
                let kind: Scalar = map.next_value()?;
                let server_side = match &kind {
                    Scalar::Str(kind) => !client_side_tool(kind),
                    Scalar::Null => false,
                    _ => true,
                };
                if server_side {
                    walk.hidden.get_or_insert("tools");
                    *self.server_tool = true;
                }
            } else {
                walk.value(key, &mut map)?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Walk {
            hidden: self.hidden,
        }
        .visit_seq(seq)
    }

    ignore_scalars!();
}

// === Anywhere below the top: ids, URLs and references ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum NestedKey {
    /// Input stored by id (`file_id`, `file_uri`): hidden when present.
    Id(&'static str),
    /// A URL field: hidden unless it is a `data:` URL (inline bytes).
    Url(&'static str),
    /// `type`: `item_reference` names a stored item.
    Type,
    Other,
}

struct NestedKeySeed;

impl<'de> DeserializeSeed<'de> for NestedKeySeed {
    type Value = NestedKey;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<NestedKey, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NestedKeySeed {
    type Value = NestedKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<NestedKey, E> {
        Ok(match key {
            "file_id" => NestedKey::Id("file_id"),
            "file_uri" => NestedKey::Id("file_uri"),
            "url" => NestedKey::Url("url"),
            "image_url" => NestedKey::Url("image_url"),
            "file_url" => NestedKey::Url("file_url"),
            "audio_url" => NestedKey::Url("audio_url"),
            "video_url" => NestedKey::Url("video_url"),
            "document_url" => NestedKey::Url("document_url"),
            "server_url" => NestedKey::Url("server_url"),
            "type" => NestedKey::Type,
            _ => NestedKey::Other,
        })
    }
}

/// What a string value under a nested key means.
struct Leaf<'a> {
    key: NestedKey,
    hidden: &'a mut Option<&'static str>,
}

impl Leaf<'_> {
    fn string(self, text: &str) {
        let hidden = match self.key {
            NestedKey::Id(name) => (!text.is_empty()).then_some(name),
            NestedKey::Url(name) => {
                let inline = text
                    .get(..5)
                    .is_some_and(|scheme| scheme.eq_ignore_ascii_case("data:"));
                (!text.is_empty() && !inline).then_some(name)
            }
            NestedKey::Type => (text == "item_reference").then_some("input"),
            NestedKey::Other => None,
        };
        if let Some(name) = hidden {
            self.hidden.get_or_insert(name);
        }
    }
}

impl<'de> DeserializeSeed<'de> for Leaf<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Leaf<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        self.string(text);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.number()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.number()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.number()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Walk {
            hidden: self.hidden,
        }
        .visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Walk {
            hidden: self.hidden,
        }
        .visit_map(map)
    }
}

impl Leaf<'_> {
    /// A numeric id is still an id.
    fn number<E: de::Error>(self) -> Result<(), E> {
        if let NestedKey::Id(name) = self.key {
            self.hidden.get_or_insert(name);
        }
        Ok(())
    }
}

/// Walks any value, noting hidden input.
struct Walk<'a> {
    hidden: &'a mut Option<&'static str>,
}

impl<'de> Walk<'_> {
    fn value<A: MapAccess<'de>>(&mut self, key: NestedKey, map: &mut A) -> Result<(), A::Error> {
        map.next_value_seed(Leaf {
            key,
            hidden: &mut *self.hidden,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(NestedKeySeed)? {
            self.value(key, &mut map)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Walk {
                hidden: &mut *self.hidden,
            })?
            .is_some()
        {}
        Ok(())
    }

    ignore_scalars!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(body: &str) -> Option<&'static str> {
        scan(body.as_bytes()).unwrap().hidden_input
    }

    #[test]
    fn reads_counts_leniently() {
        let shape = scan(
            br#"{"model":"m","max_tokens":"100000","max_completion_tokens":0,"n":2.5,"best_of":-3,"max_output_tokens":null}"#,
        )
        .unwrap();
        assert_eq!(shape.max_tokens, Count::Value(100_000));
        assert_eq!(shape.max_completion_tokens.positive(), None);
        assert_eq!(shape.n, Count::Value(3));
        assert_eq!(shape.best_of, Count::Value(0));
        assert_eq!(shape.max_output_tokens, Count::Absent);
        let shape = scan(br#"{"max_tokens":{"a":1},"n":"many"}"#).unwrap();
        assert_eq!(shape.max_tokens, Count::Unreadable);
        assert_eq!(shape.n, Count::Unreadable);
    }

    #[test]
    fn finds_hidden_input_wherever_it_is_named() {
        assert_eq!(
            hidden(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#),
            None
        );
        assert_eq!(
            hidden(r#"{"previous_response_id":"resp_1"}"#),
            Some("previous_response_id")
        );
        assert_eq!(hidden(r#"{"previous_response_id":null}"#), None);
        assert_eq!(
            hidden(r#"{"conversation":{"id":"conv_1"}}"#),
            Some("conversation")
        );
        assert_eq!(hidden(r#"{"prompt":{"id":"pmpt_1"}}"#), Some("prompt"));
        assert_eq!(hidden(r#"{"prompt":"Say hi"}"#), None);
        assert_eq!(
            hidden(
                r#"{"messages":[{"content":[{"type":"image_url","image_url":{"url":"https://x/a.png"}}]}]}"#
            ),
            Some("url")
        );
        assert_eq!(
            hidden(
                r#"{"messages":[{"content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}"#
            ),
            None
        );
        assert_eq!(
            hidden(r#"{"input":[{"content":[{"type":"input_image","image_url":"https://x"}]}]}"#),
            Some("image_url")
        );
        assert_eq!(
            hidden(r#"{"input":[{"type":"input_file","file_id":"file-1"}]}"#),
            Some("file_id")
        );
        assert_eq!(
            hidden(r#"{"input":[{"type":"item_reference","id":"msg_1"}]}"#),
            Some("input")
        );
        assert_eq!(
            hidden(
                r#"{"messages":[{"content":[{"type":"document","source":{"type":"url","url":"https://x/a.pdf"}}]}]}"#
            ),
            Some("url")
        );
        // Escaped key names are read as the upstream reads them.
        assert_eq!(
            hidden(r#"{"input":[{"file\u005fid":"file-1"}]}"#),
            Some("file_id")
        );
        // A JSON schema property called `url` is not a URL.
        assert_eq!(
            hidden(
                r#"{"tools":[{"type":"function","function":{"parameters":{"properties":{"url":{"type":"string"}}}}}]}"#
            ),
            None
        );
        assert_eq!(
            hidden(r#"{"tools":[{"type":"web_search"}]}"#),
            Some("tools")
        );
        assert_eq!(
            hidden(r#"{"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#),
            Some("tools")
        );
        assert_eq!(
            hidden(r#"{"tools":[{"name":"get_weather","input_schema":{}}]}"#),
            None
        );
    }

    #[test]
    fn refuses_duplicates_and_non_objects() {
        assert!(matches!(
            scan(br#"{"max_tokens":1,"max_tokens":100000}"#),
            Err(ScanError::Duplicate("max_tokens"))
        ));
        assert!(matches!(
            scan(br#"{"stream_options":{"include_usage":true},"stream_options":null}"#),
            Err(ScanError::Duplicate("stream_options"))
        ));
        assert!(matches!(scan(b"[1,2]"), Err(ScanError::NotAnObject)));
        assert!(matches!(scan(b"{\"a\":1} x"), Err(ScanError::Syntax(_))));
        assert!(matches!(scan(b"{\"a\":"), Err(ScanError::Syntax(_))));
    }
}
