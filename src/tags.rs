//! Cost allocation tags (contract §6): `x-tollgate-tags: project=alpha,env=prod`
//! on a request, default tags on a key; the header's tags win per key. At
//! most 10 tags; a key is `[a-z0-9_.-]{1,64}`, a value up to 128 printable
//! characters (no comma: it separates tags). Stored on the row as a JSON
//! object with its keys sorted, so equal tag sets are equal text.

use std::collections::BTreeMap;

/// Tags a request or key may carry.
pub const MAX_TAGS: usize = 10;
const MAX_KEY: usize = 64;
const MAX_VALUE: usize = 128;

pub type Tags = BTreeMap<String, String>;

/// Whether `key` may name a tag.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

fn check(key: &str, value: &str) -> Result<(), String> {
    if !valid_key(key) {
        return Err(format!(
            "tag key {key:?} must be 1 to 64 of a-z, 0-9, '_', '.', '-'"
        ));
    }
    if value.chars().count() > MAX_VALUE || value.chars().any(|c| c.is_control() || c == ',') {
        return Err(format!(
            "tag {key}'s value must be at most 128 printable characters without commas"
        ));
    }
    Ok(())
}

/// Reads `k=v,k=v` (spaces around items ignored; a later repeat of a key
/// wins).
pub fn parse_header(text: &str) -> Result<Tags, String> {
    let mut tags = Tags::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not key=value"))?;
        let (key, value) = (key.trim(), value.trim());
        check(key, value)?;
        tags.insert(key.to_string(), value.to_string());
    }
    if tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags"));
    }
    Ok(tags)
}

/// Reads a key's default tags from JSON: an object of strings (or the
/// header's `k=v,…` text); null or `{}` for none.
pub fn from_json(value: &serde_json::Value) -> Result<Tags, String> {
    match value {
        serde_json::Value::Null => Ok(Tags::new()),
        serde_json::Value::String(text) => parse_header(text),
        serde_json::Value::Object(map) => {
            let mut tags = Tags::new();
            for (key, value) in map {
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("tag {key}'s value must be a string"))?;
                check(key, value)?;
                tags.insert(key.clone(), value.to_string());
            }
            if tags.len() > MAX_TAGS {
                return Err(format!("at most {MAX_TAGS} tags"));
            }
            Ok(tags)
        }
        _ => Err("tags must be an object of strings".into()),
    }
}

/// The stored form: a JSON object (keys sorted), none when empty.
pub fn to_text(tags: &Tags) -> Option<String> {
    (!tags.is_empty()).then(|| serde_json::to_string(tags).unwrap_or_default())
}

/// The stored form read back (a malformed one reads as none).
pub fn from_text(text: Option<&str>) -> Tags {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// A request's tags: the key's defaults, overridden per key by the
/// header's; more than 10 in all is refused.
pub fn merge(defaults: &Tags, header: &Tags) -> Result<Tags, String> {
    let mut tags = defaults.clone();
    for (key, value) in header {
        tags.insert(key.clone(), value.clone());
    }
    if tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags with the key's defaults"));
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_defaults() {
        let header = parse_header(" project=alpha , env=prod,env=dev").unwrap();
        assert_eq!(
            to_text(&header).unwrap(),
            r#"{"env":"dev","project":"alpha"}"#
        );
        for bad in [
            "Project=x",
            "a",
            "=x",
            "k=\u{7}",
            &format!("{}=x", "k".repeat(65)),
            &format!("k={}", "v".repeat(129)),
        ] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
        let eleven: String = (0..11).map(|i| format!("k{i}=v,")).collect();
        assert!(parse_header(&eleven).is_err());
        let defaults =
            from_json(&serde_json::json!({"project": "beta", "team.unit": "ml"})).unwrap();
        let merged = merge(&defaults, &header).unwrap();
        assert_eq!(merged["project"], "alpha");
        assert_eq!(merged["team.unit"], "ml");
        assert_eq!(from_text(to_text(&merged).as_deref()), merged);
        assert!(from_json(&serde_json::json!({"k": 1})).is_err());
        assert_eq!(to_text(&Tags::new()), None);
    }
}
