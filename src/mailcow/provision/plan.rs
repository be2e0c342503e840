//! What a creation or a template update writes, computed from the template and the LDAP entry
//! alone (no database): the values of a new mailbox, the changes of an update, tags and ACL
//! flags.

use serde_json::{Map, Value};

use super::ProvisionError;
use crate::mailcow::address;
use crate::mailcow::store::{LockedMailbox, USER_ACL_COLUMNS};
use crate::mailcow::template::{MIB, Template};
use crate::mailcow::{Mailbox, RESOURCE_KINDS};
use crate::planner::{self, MailboxState};

/// mailcow's `$TAGGING_LIMIT`.
pub const TAG_LIMIT: usize = 25;

/// The `*_access` keys of `mailbox.attributes`, default "1".
const ACCESS_KEYS: [&str; 7] = [
    "sogo_access",
    "imap_access",
    "pop3_access",
    "smtp_access",
    "sieve_access",
    "eas_access",
    "dav_access",
];

const QUARANTINE_NOTIFICATIONS: [&str; 4] = ["never", "hourly", "daily", "weekly"];
const QUARANTINE_CATEGORIES: [&str; 3] = ["add_header", "reject", "all"];

/// One leading `<` and one trailing `>` stripped, at most 255 characters (`mailbox.name`).
pub fn clean_name(display_name: Option<&str>) -> String {
    let name = display_name.unwrap_or("");
    let name = name.strip_prefix('<').unwrap_or(name);
    let name = name.strip_suffix('>').unwrap_or(name);
    name.chars().take(255).collect()
}

/// Every value of a new mailbox, computed (and validated) before the transaction starts.
pub(super) struct NewMailbox {
    pub(super) username: String,
    pub(super) local_part: String,
    pub(super) domain: String,
    pub(super) template: String,
    pub(super) name: String,
    pub(super) quota_mib: i64,
    pub(super) active: i64,
    /// The `attributes` JSON text; `passwd_update` is set to NOW() by the INSERT.
    pub(super) attributes: String,
    pub(super) acl: [bool; 15],
    pub(super) tags: Vec<String>,
}

impl NewMailbox {
    pub(super) fn build(
        address: &address::Address,
        display_name: Option<&str>,
        template: &Template,
    ) -> Result<NewMailbox, ProvisionError> {
        let invalid = |what: String| {
            ProvisionError::Refused(format!("template {} invalid: {what}", template.name))
        };
        if template.int("quota").unwrap_or(0) < 0 {
            return Err(invalid("negative quota".into()));
        }
        let quarantine_notification = template
            .string("quarantine_notification")
            .unwrap_or_else(|| "hourly".into());
        if !QUARANTINE_NOTIFICATIONS.contains(&quarantine_notification.as_str()) {
            return Err(invalid(format!(
                "quarantine_notification {quarantine_notification}"
            )));
        }
        let quarantine_category = template
            .string("quarantine_category")
            .unwrap_or_else(|| "reject".into());
        if !QUARANTINE_CATEGORIES.contains(&quarantine_category.as_str()) {
            return Err(invalid(format!(
                "quarantine_category {quarantine_category}"
            )));
        }
        let flag = |key: &str, default: i64| {
            Value::String(template.int(key).unwrap_or(default).to_string())
        };

        // Keys and order exactly as mailcow's `mailbox('add', 'mailbox')` writes them.
        let mut attributes = Map::new();
        // always 0 for mailboxes of an identity provider
        attributes.insert("force_pw_update".into(), Value::String("0".into()));
        attributes.insert("force_tfa".into(), flag("force_tfa", 0));
        attributes.insert("tls_enforce_in".into(), flag("tls_enforce_in", 0));
        attributes.insert("tls_enforce_out".into(), flag("tls_enforce_out", 0));
        for key in ACCESS_KEYS {
            attributes.insert(key.into(), flag(key, 1));
        }
        attributes.insert("relayhost".into(), flag("relayhost", 0));
        attributes.insert("passwd_update".into(), Value::String(String::new()));
        attributes.insert("mailbox_format".into(), Value::String("maildir:".into()));
        attributes.insert(
            "quarantine_notification".into(),
            Value::String(quarantine_notification),
        );
        attributes.insert(
            "quarantine_category".into(),
            Value::String(quarantine_category),
        );
        attributes.insert(
            "attribute_hash".into(),
            Value::String(template.attribute_hash().to_owned()),
        );

        let mut name = clean_name(display_name);
        if name.is_empty() {
            name = address.local_part.clone();
        }
        Ok(NewMailbox {
            username: address.username.clone(),
            local_part: address.local_part.clone(),
            domain: address.domain.clone(),
            template: template.name.clone(),
            name,
            quota_mib: template.quota_mib(),
            active: template.int("active").unwrap_or(1),
            attributes: Value::Object(attributes).to_string(),
            acl: acl_flags(template),
            tags: template_tags(template),
        })
    }
}

impl NewMailbox {
    /// The rows a creation writes, one line each, for a dry run.
    pub(super) fn rows(&self) -> Vec<String> {
        vec![
            format!(
                "mailbox: username {}, name '{}', local_part {}, domain {}, quota {} MiB, \
                 active {}, authsource ldap, attributes {}",
                self.username,
                self.name,
                self.local_part,
                self.domain,
                self.quota_mib,
                self.active,
                self.attributes
            ),
            format!(
                "quota2, quota2replica: {} (0 bytes, 0 messages)",
                self.username
            ),
            format!(
                "alias: {0} -> {0}, domain {1}, active {2}",
                self.username, self.domain, self.active
            ),
            tags_row(&self.tags),
            acl_row(&self.acl),
            "_sogo_static_view: this mailbox's row".into(),
        ]
    }

    /// The mailbox as the creation would leave it, for a dry run's access checks.
    pub(super) fn as_created(&self) -> Mailbox {
        Mailbox {
            username: self.username.clone(),
            name: self.name.clone(),
            quota: u64::try_from(self.quota_mib.saturating_mul(MIB)).unwrap_or(0),
            local_part: self.local_part.clone(),
            domain: self.domain.clone(),
            attributes: serde_json::from_str(&self.attributes).unwrap_or_default(),
            kind: String::new(),
            authsource: Some("ldap".into()),
            active: self.active,
            // the checks refuse an inactive or missing domain
            domain_active: Some(1),
        }
    }
}

fn tags_row(tags: &[String]) -> String {
    if tags.is_empty() {
        "tags_mailbox: no tags".into()
    } else {
        format!("tags_mailbox: {}", tags.join(", "))
    }
}

fn acl_row(acl: &[bool; 15]) -> String {
    let on: Vec<&str> = USER_ACL_COLUMNS
        .iter()
        .zip(acl)
        .filter(|(_, on)| **on)
        .map(|(column, _)| *column)
        .collect();
    format!("user_acl: on {}", on.join(", "))
}

/// What a re-applied template changes.
pub(super) struct Update {
    hash: String,
    /// The cleaned LDAP display name; `None` (empty in LDAP): the stored name stays.
    name: Option<String>,
    /// `None`: the template has no quota; the mailbox keeps its own.
    pub(super) quota_mib: Option<i64>,
    /// `None`: the template has no `active`; the mailbox keeps its own.
    active: Option<i64>,
    /// `attributes` keys set from the template (JSON_SET pairs); other keys are kept.
    pub(super) attributes: Vec<(&'static str, String)>,
    pub(super) acl: [bool; 15],
    pub(super) tags: Vec<String>,
    pub(super) template: String,
}

impl Update {
    pub(super) fn build(display_name: Option<&str>, template: &Template) -> Update {
        let name = written_name(display_name);
        let hash = template.attribute_hash().to_owned();
        let mut attributes: Vec<(&'static str, String)> = vec![("force_pw_update", "0".into())];
        for key in ["force_tfa", "tls_enforce_in", "tls_enforce_out"]
            .into_iter()
            .chain(ACCESS_KEYS)
        {
            if let Some(v) = template.int(key) {
                attributes.push((key, v.to_string()));
            }
        }
        // mailcow's quarantine setters ignore invalid values
        if let Some(v) = template
            .string("quarantine_notification")
            .filter(|v| QUARANTINE_NOTIFICATIONS.contains(&v.as_str()))
        {
            attributes.push(("quarantine_notification", v));
        }
        if let Some(v) = template
            .string("quarantine_category")
            .filter(|v| QUARANTINE_CATEGORIES.contains(&v.as_str()))
        {
            attributes.push(("quarantine_category", v));
        }
        attributes.push(("attribute_hash", hash.clone()));
        Update {
            hash,
            name,
            quota_mib: template
                .int("quota")
                .filter(|q| *q >= 0)
                .map(|_| template.quota_mib()),
            active: template.int("active"),
            attributes,
            acl: acl_flags(template),
            tags: template_tags(template),
            template: template.name.clone(),
        }
    }

    /// The mailbox as this update would leave it, as far as the login checks go: `active` and
    /// the `*_access` keys from the template, everything else as given. Nothing is written.
    pub(super) fn would_leave(&self, mailbox: &Mailbox) -> Mailbox {
        let mut mailbox = mailbox.clone();
        if let Some(active) = self.active {
            mailbox.active = active;
        }
        for (key, value) in &self.attributes {
            if ACCESS_KEYS.contains(key) {
                mailbox
                    .attributes
                    .insert((*key).to_owned(), Value::String(value.clone()));
            }
        }
        mailbox
    }

    /// The rows this update writes on the mailbox as read, one line each, for a dry run.
    pub(super) fn rows(&self, locked: &LockedMailbox, quota: i64) -> Vec<String> {
        let (name, active) = self.name_and_active(locked);
        let attributes: Vec<String> = self
            .attributes
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        vec![
            format!(
                "mailbox: quota {} MiB (now {} MiB), active {active}, name '{name}', \
                 attributes set {}",
                quota / MIB,
                locked.quota / MIB,
                attributes.join(" ")
            ),
            format!("alias: active {active}"),
            acl_row(&self.acl),
            format!("{} (added; none removed)", tags_row(&self.tags)),
            "_sogo_static_view: this mailbox's row".into(),
        ]
    }

    /// mailcow's change detection: stored hash and stored name both equal the new ones.
    pub(super) fn matches(&self, stored_name: &str, stored_hash: Option<&str>) -> bool {
        matches(&self.hash, self.name.as_deref(), stored_hash, |n| {
            n == stored_name
        })
    }

    /// The `name` and `active` the update writes: the template's and the directory's where
    /// they say something, else the values of the row as locked (not as read before the lock:
    /// an admin may have changed them meanwhile).
    pub(super) fn name_and_active<'a>(&'a self, locked: &'a LockedMailbox) -> (&'a str, i64) {
        (
            self.name.as_deref().unwrap_or(&locked.name),
            self.active.unwrap_or(locked.active),
        )
    }
}

/// Whether a template (of this `attribute_hash`) would change nothing on a mailbox: the stored
/// hash equals it, and the LDAP display name is empty or `stored_name_is` it. The sync's
/// comparison before any transaction, and a login's before it opens one (without building
/// the [`Update`]); the update decides again on the locked row.
pub fn up_to_date(
    hash: &str,
    display_name: Option<&str>,
    stored_hash: Option<&str>,
    stored_name_is: impl FnOnce(&str) -> bool,
) -> bool {
    let name = written_name(display_name);
    matches(hash, name.as_deref(), stored_hash, stored_name_is)
}

/// The name an update writes: the cleaned LDAP display name; `None` when that is empty (the
/// stored name stays).
fn written_name(display_name: Option<&str>) -> Option<String> {
    Some(clean_name(display_name)).filter(|n| !n.is_empty())
}

fn matches(
    hash: &str,
    name: Option<&str>,
    stored_hash: Option<&str>,
    stored_name_is: impl FnOnce(&str) -> bool,
) -> bool {
    stored_hash == Some(hash) && name.is_none_or(stored_name_is)
}

/// Whether a template may still be re-applied to the row as locked: only to an LDAP-backed
/// mailbox that is not a resource (an admin may have switched it meanwhile). `Err`: the
/// authsource it has now (NULL counts as mailcow).
pub(super) fn still_ldap_backed(locked: &LockedMailbox) -> Result<(), String> {
    planner::ldap_backed(MailboxState::Existing {
        authsource: locked.authsource.as_deref(),
        resource: RESOURCE_KINDS.contains(&locked.kind.as_str()),
    })
}

pub(super) fn acl_flags(template: &Template) -> [bool; 15] {
    USER_ACL_COLUMNS.map(|column| template.nonzero(&format!("acl_{column}")))
}

/// Non-empty, distinct tags that fit `tags_mailbox.tag_name`, at most [`TAG_LIMIT`].
pub(super) fn template_tags(template: &Template) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in template.tags() {
        if tags.len() == TAG_LIMIT {
            break;
        }
        if !tag.is_empty() && tag.chars().count() <= 255 && !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_one_angle_bracket_each_side() {
        assert_eq!(clean_name(Some("<Bob Example>")), "Bob Example");
        assert_eq!(clean_name(Some("<<Bob>>")), "<Bob>");
        assert_eq!(clean_name(Some("Bob>")), "Bob");
        assert_eq!(clean_name(Some("<")), "");
        assert_eq!(clean_name(Some("<>")), "");
        assert_eq!(clean_name(None), "");
        assert_eq!(clean_name(Some(&"é".repeat(300))).chars().count(), 255);
    }

    #[test]
    fn new_mailbox_attributes_have_mailcows_keys_in_order() {
        let t = Template::from_text(
            r#"{"quota":1073741824,"tags":["staff","staff","","x"],"pop3_access":0,"force_pw_update":1,"active":2,"acl_spam_alias":1,"acl_pw_reset":"0","acl_syncjobs":"1"}"#,
        );
        let address = address::normalize("Bob@Example.org").unwrap();
        let new = NewMailbox::build(&address, Some(""), &t).unwrap();
        let attrs: Map<String, Value> = serde_json::from_str(&new.attributes).unwrap();
        let keys: Vec<&str> = attrs.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "force_pw_update",
                "force_tfa",
                "tls_enforce_in",
                "tls_enforce_out",
                "sogo_access",
                "imap_access",
                "pop3_access",
                "smtp_access",
                "sieve_access",
                "eas_access",
                "dav_access",
                "relayhost",
                "passwd_update",
                "mailbox_format",
                "quarantine_notification",
                "quarantine_category",
                "attribute_hash"
            ]
        );
        assert!(attrs.values().all(Value::is_string));
        assert_eq!(attrs["force_pw_update"], "0");
        assert_eq!(attrs["pop3_access"], "0");
        assert_eq!(attrs["imap_access"], "1");
        assert_eq!(attrs["attribute_hash"], t.attribute_hash());
        assert_eq!(new.name, "bob");
        assert_eq!(new.quota_mib, 1024);
        assert_eq!(new.active, 2);
        assert_eq!(new.tags, ["staff", "x"]);
        let on: Vec<&str> = USER_ACL_COLUMNS
            .iter()
            .zip(new.acl)
            .filter(|(_, on)| *on)
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(on, ["spam_alias", "syncjobs"]);
    }

    #[test]
    fn invalid_templates_are_refused() {
        let address = address::normalize("bob@example.org").unwrap();
        for text in [
            r#"{"quarantine_category":"bogus"}"#,
            r#"{"quarantine_notification":"yearly"}"#,
            r#"{"quota":-1}"#,
        ] {
            assert!(matches!(
                NewMailbox::build(&address, None, &Template::from_text(text)),
                Err(ProvisionError::Refused(_))
            ));
        }
    }

    #[test]
    fn tags_are_limited() {
        let tags: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
        let t = Template::from_text(&serde_json::json!({ "tags": tags }).to_string());
        assert_eq!(template_tags(&t).len(), TAG_LIMIT);
        assert_eq!(template_tags(&t)[24], "t24");
    }
}
