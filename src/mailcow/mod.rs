//! mailcow's MySQL/MariaDB schema: mailbox lookups, templates and provisioning.

pub mod address;
pub mod provision;
pub mod template;

pub mod store;

use serde_json::{Map, Value};

pub use store::{AuthsourceChange, SqlPassword, Store, StoreError, UnreadableMailbox};

/// Resource mailboxes (`mailbox.kind`) never log in.
pub const RESOURCE_KINDS: [&str; 3] = ["location", "thing", "group"];

/// One row of `mailbox` with its domain's `active` flag.
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub username: String,
    pub name: String,
    /// Bytes; 0 = unlimited.
    pub quota: u64,
    pub local_part: String,
    pub domain: String,
    pub attributes: Map<String, Value>,
    pub kind: String,
    /// `None` for NULL, which mailcow treats as `mailcow`.
    pub authsource: Option<String>,
    pub active: i64,
    /// `None` when the domain row is missing.
    pub domain_active: Option<i64>,
}

impl Mailbox {
    pub fn is_resource(&self) -> bool {
        RESOURCE_KINDS.contains(&self.kind.as_str())
    }

    /// A string-valued key of `attributes` (mailcow writes every value as a string).
    pub fn attribute(&self, key: &str) -> Option<String> {
        match self.attributes.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(if *b { "1" } else { "0" }.into()),
            _ => None,
        }
    }

    /// mailcow's protocol rule: refused when `<service>_access` exists and is not "1".
    /// Dovecot's submission service sends mail, so it answers to `smtp_access`.
    pub fn service_allowed(&self, service: &str) -> bool {
        let service = service.to_ascii_lowercase();
        let key = match service.as_str() {
            "submission" => "smtp_access".to_owned(),
            other => format!("{other}_access"),
        };
        self.attributes.get(&key).is_none() || self.attribute(&key).as_deref() == Some("1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(attributes: Value) -> Mailbox {
        Mailbox {
            username: "a@example.org".into(),
            name: String::new(),
            quota: 0,
            local_part: "a".into(),
            domain: "example.org".into(),
            attributes: attributes.as_object().unwrap().clone(),
            kind: String::new(),
            authsource: Some("ldap".into()),
            active: 1,
            domain_active: Some(1),
        }
    }

    #[test]
    fn service_access_follows_mailcows_rule() {
        let m = mailbox(serde_json::json!({
            "imap_access": "1", "pop3_access": "0", "smtp_access": 0, "sieve_access": 1
        }));
        assert!(m.service_allowed("imap"));
        assert!(m.service_allowed("IMAP"));
        assert!(!m.service_allowed("pop3"));
        assert!(!m.service_allowed("smtp"));
        assert!(
            !m.service_allowed("submission"),
            "submission sends mail: smtp_access"
        );
        assert!(m.service_allowed("sieve"));
        assert!(m.service_allowed("doveadm"), "no key: allowed");
    }
}
