//! The configuration loader: YAML text → validated `Config` or one error line, and an error
//! never repeats a password written in the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::config::Config;
use serde_norway::Value;

const PATH: &str = "/nonexistent/mailcow-ldap-auth-fuzz/config.yml";

/// The inline passwords as the YAML parser reads them (numbers in their canonical form).
fn inline_secrets(document: &Value) -> Vec<String> {
    [("ldap", "bind_password"), ("database", "password")]
        .iter()
        .filter_map(|(section, key)| match document.get(section)?.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// How many scalars (keys and values, aliases expanded) of the document contain `needle`.
fn scalars_containing(value: &Value, needle: &str) -> usize {
    match value {
        Value::String(s) => usize::from(s.contains(needle)),
        Value::Number(n) => usize::from(n.to_string().contains(needle)),
        Value::Bool(b) => usize::from(b.to_string().contains(needle)),
        Value::Sequence(items) => items.iter().map(|v| scalars_containing(v, needle)).sum(),
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| scalars_containing(k, needle) + scalars_containing(v, needle))
            .sum(),
        Value::Tagged(tagged) => scalars_containing(&tagged.value, needle),
        Value::Null => 0,
    }
}

/// The same text with the one literal occurrence of `secret` replaced by other characters.
fn with_secret_replaced(text: &str, secret: &str) -> String {
    let other: String = secret
        .chars()
        .map(|c| if c == 'Q' { 'R' } else { 'Q' })
        .collect();
    text.replacen(secret, &other, 1)
}

fn error_of(text: &str) -> Option<String> {
    Config::from_yaml(text, Path::new(PATH))
        .err()
        .map(|e| e.to_string())
}

fuzz_target!(|text: &str| {
    let Some(error) = error_of(text) else { return };
    assert!(!error.is_empty());
    let Ok(document) = serde_norway::from_str::<Value>(text) else {
        return;
    };
    for secret in inline_secrets(&document) {
        // Only a secret that is distinctive (in no other scalar, written once) can be told
        // apart from an echo of another key; the error must change when the secret does.
        if secret.chars().count() < 4
            || scalars_containing(&document, &secret) != 1
            || text.matches(secret.as_str()).count() != 1
            || !error.contains(secret.as_str())
        {
            continue;
        }
        let control = error_of(&with_secret_replaced(text, &secret)).unwrap_or_default();
        assert!(
            control.contains(secret.as_str()),
            "the error repeats the password {secret:?}: {error}"
        );
    }
});
