//! mailcow mailbox templates and their `attribute_hash`.

use std::fmt::Write as _;

use mysql::prelude::Queryable;
use sha1::{Digest, Sha1};

use super::{Context, Store, StoreError};

/// Names of all mailbox templates (`templates.type = 'mailbox'`).
pub fn mailbox_template_names(store: &mut Store) -> Result<Vec<String>, StoreError> {
    store
        .conn()
        .query("SELECT template FROM templates WHERE type = 'mailbox' ORDER BY id")
        .context("listing the mailbox templates")
}

/// mailcow's schema version (`versions.db_schema`).
pub fn schema_version(store: &mut Store) -> Result<String, StoreError> {
    store
        .conn()
        .query_first("SELECT version FROM versions WHERE application = 'db_schema'")
        .context("reading the schema version")?
        .ok_or_else(|| {
            StoreError::Data("no db_schema row in `versions`: is this mailcow's database?".into())
        })
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
pub fn php_json_encode_string(s: &str) -> String {
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
