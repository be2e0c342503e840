//! mailcow mailbox templates and their `attribute_hash`.

use std::fmt::Write as _;

use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

/// One mebibyte: templates and mailboxes hold bytes, domain limits MiB.
pub(crate) const MIB: i64 = 1_048_576;

/// A mailbox template (`templates` row with `type = 'mailbox'`).
#[derive(Debug, Clone)]
pub(crate) struct Template {
    /// `templates.template`, as stored.
    pub name: String,
    /// The `attributes` column exactly as stored: `attribute_hash` is computed from this text
    /// (once, in [`Template::new`]: never changed afterwards).
    pub raw: String,
    /// The same text parsed.
    pub attributes: Map<String, Value>,
    /// `attribute_hash`, computed once: `serve` compares it on every login of a mailbox whose
    /// read it reuses.
    hash: String,
}

#[cfg(test)]
impl Template {
    /// A template called "T" with this attributes text, for unit tests.
    pub(crate) fn from_text(text: &str) -> Template {
        Template::new("T".into(), text.into(), serde_json::from_str(text).unwrap())
    }
}

impl Template {
    pub(crate) fn new(name: String, raw: String, attributes: Map<String, Value>) -> Template {
        Template {
            hash: attribute_hash(&raw),
            name,
            raw,
            attributes,
        }
    }

    /// `attribute_hash` of this template's raw text, as mailcow computes it.
    pub fn attribute_hash(&self) -> &str {
        &self.hash
    }

    /// PHP `intval()` of a key, `None` when the key is absent.
    pub(crate) fn int(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).map(php_intval)
    }

    /// PHP `strval()` of a key, `None` when the key is absent or not a scalar.
    pub(crate) fn string(&self, key: &str) -> Option<String> {
        match self.attributes.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(if *b { "1" } else { "" }.into()),
            Value::Null => Some(String::new()),
            _ => None,
        }
    }

    /// PHP `$value != 0` for a key (mailcow's test for `acl_*` keys); absent is false.
    pub(crate) fn nonzero(&self, key: &str) -> bool {
        self.attributes.get(key).is_some_and(php_nonzero)
    }

    /// The template quota in MiB: bytes divided by 1048576, rounded down (absent: 0 = no limit).
    pub(crate) fn quota_mib(&self) -> i64 {
        self.int("quota").unwrap_or(0).div_euclid(MIB)
    }

    /// `tags` as strings (PHP `(array)` of a single string gives one tag).
    pub(crate) fn tags(&self) -> Vec<String> {
        let scalar = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(true) => Some("1".into()),
            _ => None,
        };
        match self.attributes.get("tags") {
            Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
            Some(Value::Object(items)) => items.values().filter_map(scalar).collect(),
            Some(v) => scalar(v).into_iter().collect(),
            None => Vec::new(),
        }
    }
}

/// PHP's whitespace for numeric strings.
fn php_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r', '\u{0b}', '\u{0c}'])
}

/// PHP `is_numeric()` of a string, as its float value.
fn php_numeric(s: &str) -> Option<f64> {
    let t = php_trim(s);
    let shaped = !t.is_empty()
        && t.chars().any(|c| c.is_ascii_digit())
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    if shaped { t.parse().ok() } else { None }
}

/// PHP 8 `intval()`.
pub(crate) fn php_intval(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .unwrap_or(0),
        Value::Bool(b) => i64::from(*b),
        Value::Null => 0,
        Value::Array(a) => i64::from(!a.is_empty()),
        Value::Object(o) => i64::from(!o.is_empty()),
        Value::String(s) => {
            if let Some(f) = php_numeric(s) {
                return php_trim(s).parse().unwrap_or(f as i64);
            }
            // leading integer prefix ("12abc" → 12), else 0
            let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\u{0b}', '\u{0c}']);
            let (sign, digits) = match t.strip_prefix('-') {
                Some(rest) => (-1, rest),
                None => (1, t.strip_prefix('+').unwrap_or(t)),
            };
            let end = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            digits[..end].parse::<i64>().map_or(0, |n| sign * n)
        }
    }
}

/// PHP 8 `$value != 0`.
pub(crate) fn php_nonzero(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::Bool(b) => *b,
        Value::Null => false,
        // a numeric string compares as a number, any other string as the string "0"
        Value::String(s) => php_numeric(s).is_none_or(|f| f != 0.0),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `sha1(json_encode($raw_text))` as mailcow computes it: the template's raw JSON text encoded
/// as a JSON string literal with PHP's default flags, then SHA-1 in lower-case hex.
pub fn attribute_hash(raw_attributes: &str) -> String {
    hex::encode(Sha1::digest(
        php_json_encode_string(raw_attributes).as_bytes(),
    ))
}

/// PHP `json_encode()` of a string with default flags: `"` `\` and `/` escaped, the usual
/// short escapes, other control characters and every non-ASCII character as `\uXXXX`
/// (UTF-16, so surrogate pairs above the BMP).
pub(crate) fn php_json_encode_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // PHP leaves DEL (0x7f) alone: only characters below 0x20 count as control.
            c if c.is_ascii() && c >= ' ' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn php_conversions() {
        for (v, int, nonzero) in [
            (json!(0), 0, false),
            (json!(1), 1, true),
            (json!(2), 2, true),
            (json!(1073741824), 1073741824, true),
            (json!(1.9), 1, true),
            (json!("1"), 1, true),
            (json!("0"), 0, false),
            (json!(" 0"), 0, false),
            (json!("0.0"), 0, false),
            (json!("12abc"), 12, true),
            (json!("abc"), 0, true),
            (json!(""), 0, true),
            (json!("1e3"), 1000, true),
            (json!("-5"), -5, true),
            (json!(true), 1, true),
            (json!(false), 0, false),
            (json!(null), 0, false),
        ] {
            assert_eq!(php_intval(&v), int, "intval({v})");
            assert_eq!(php_nonzero(&v), nonzero, "{v} != 0");
        }
    }

    #[test]
    fn quota_tags_and_strings() {
        let t = Template::from_text(
            r#"{"quota":1073741824,"tags":["a","b",3],"active":"2","quarantine_category":"reject"}"#,
        );
        assert_eq!(t.quota_mib(), 1024);
        assert_eq!(t.tags(), ["a", "b", "3"]);
        assert_eq!(t.int("active"), Some(2));
        assert_eq!(t.int("missing"), None);
        assert_eq!(t.string("quarantine_category").as_deref(), Some("reject"));
        assert!(!t.nonzero("acl_missing"));
        // bytes that are not a whole MiB are rounded down, as mailcow's integer conversion
        assert_eq!(Template::from_text(r#"{"quota":1048575}"#).quota_mib(), 0);
        assert_eq!(Template::from_text(r#"{"quota":"3145729"}"#).quota_mib(), 3);
        assert_eq!(Template::from_text(r#"{}"#).quota_mib(), 0);
        assert_eq!(Template::from_text(r#"{"tags":"solo"}"#).tags(), ["solo"]);
        assert_eq!(t.attribute_hash(), attribute_hash(&t.raw));
    }

    #[test]
    fn matches_every_php_vector() {
        let text = include_str!("../../tests/fixtures/attribute_hash_vectors.json");
        let vectors: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        assert!(!vectors.is_empty());
        for v in vectors {
            let raw = v["raw"].as_str().unwrap();
            assert_eq!(
                php_json_encode_string(raw),
                v["json_encoded"].as_str().unwrap(),
                "{}",
                v["name"]
            );
            assert_eq!(
                attribute_hash(raw),
                v["attribute_hash"].as_str().unwrap(),
                "{}",
                v["name"]
            );
        }
    }
}
