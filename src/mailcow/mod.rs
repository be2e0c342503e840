//! mailcow's MySQL/MariaDB schema: mailbox lookups, templates and provisioning.

pub mod address;
pub(crate) mod password_hash;
pub(crate) mod provision;
pub(crate) mod ratelimit;
pub mod template;

pub(crate) mod store;

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::config::{Config, ConfigError};

pub(crate) use store::{
    AppPassword, AuthsourceChange, LoginRead, MailboxDigest, SqlPassword, Store, StoreError,
    TableChanges, TemplateRead, UnreadableMailbox,
};
pub(crate) use template::Template;

/// Why the configuration could not be completed from mailcow's `identity_provider` table.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The configuration a command runs with: with `ldap.from_mailcow`, completed from mailcow's
/// table as it is now; otherwise the file's.
pub(crate) fn effective_config<'c>(
    config: &'c Config,
    store: &mut Store,
) -> Result<Cow<'c, Config>, SettingsError> {
    if !config.reads_mailcow_settings() {
        return Ok(Cow::Borrowed(config));
    }
    let rows = store.identity_provider()?;
    Ok(Cow::Owned(config.with_mailcow_settings(&rows)?))
}

/// Resource mailboxes (`mailbox.kind`) never log in.
pub(crate) const RESOURCE_KINDS: [&str; 3] = ["location", "thing", "group"];

/// One row of `mailbox` with its domain's `active` flag.
#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
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
    pub(crate) fn is_resource(&self) -> bool {
        RESOURCE_KINDS.contains(&self.kind.as_str())
    }

    /// A string-valued key of `attributes` (mailcow writes every value as a string).
    pub(crate) fn attribute(&self, key: &str) -> Option<String> {
        match self.attributes.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(if *b { "1" } else { "0" }.into()),
            _ => None,
        }
    }

    /// mailcow's protocol rule: refused when `<service>_access` exists and is not "1".
    pub(crate) fn service_allowed(&self, service: &str) -> bool {
        let key = access_key(service);
        self.attributes.get(&key).is_none() || self.attribute(&key).as_deref() == Some("1")
    }
}

/// The `<service>_access` key (mailbox attributes) or column (`app_passwd`) a Dovecot service
/// answers to. Dovecot's submission service sends mail, so it answers to `smtp_access`.
pub(crate) fn access_key(service: &str) -> String {
    match service.to_ascii_lowercase().as_str() {
        "submission" => "smtp_access".to_owned(),
        other => format!("{other}_access"),
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
