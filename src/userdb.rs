//! The userdb fields a successful login or lookup hands to Dovecot, per Dovecot version.

use std::collections::BTreeMap;

use crate::mailcow::Mailbox;

/// Which Dovecot reads the fields: 2.4 renamed the quota setting and silently ignores the
/// 2.3 name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DovecotVersion {
    #[value(name = "2.3")]
    V2_3,
    #[value(name = "2.4")]
    V2_4,
}

/// Field name → value, without the `userdb_` prefix a passdb reply adds: the quota for this
/// Dovecot, then the configured fields as filled in by
/// [`crate::config::DovecotConfig::expand_userdb_fields`].
/// The quota (bytes) is left out when it is 0 (mailcow's "unlimited"), so that Dovecot's own
/// default applies, as with 2.3 before.
pub fn fields(
    mailbox: &Mailbox,
    configured: &BTreeMap<String, String>,
    version: DovecotVersion,
) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    if mailbox.quota > 0 {
        let (name, value) = match version {
            DovecotVersion::V2_3 => ("quota_rule", format!("*:bytes={}", mailbox.quota)),
            DovecotVersion::V2_4 => ("quota_storage_size", mailbox.quota.to_string()),
        };
        fields.insert(name.to_owned(), value);
    }
    fields.extend(configured.iter().map(|(k, v)| (k.clone(), v.clone())));
    fields
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `<local>@example.org`, active, LDAP-backed.
    pub(crate) fn mailbox(local: &str, quota: u64) -> Mailbox {
        Mailbox {
            username: format!("{local}@example.org"),
            name: String::new(),
            quota,
            local_part: local.into(),
            domain: "example.org".into(),
            attributes: Default::default(),
            kind: String::new(),
            authsource: Some("ldap".into()),
            active: 1,
            domain_active: Some(1),
        }
    }

    #[test]
    fn fields_add_quota_to_the_configured_ones() {
        let configured = BTreeMap::from([
            ("home".to_owned(), "/var/vmail/example.org/bob".to_owned()),
            ("uid".to_owned(), "5000".to_owned()),
        ]);
        let fields = fields(&mailbox("bob", 1024), &configured, DovecotVersion::V2_3);
        assert_eq!(fields["home"], "/var/vmail/example.org/bob");
        assert_eq!(fields["uid"], "5000");
        assert_eq!(fields["quota_rule"], "*:bytes=1024");
        assert!(!fields.contains_key("quota_storage_size"));
    }

    #[test]
    fn dovecot_24_gets_quota_storage_size() {
        let fields = fields(
            &mailbox("bob", 1024),
            &BTreeMap::new(),
            DovecotVersion::V2_4,
        );
        assert_eq!(fields["quota_storage_size"], "1024");
        assert!(!fields.contains_key("quota_rule"));
    }

    #[test]
    fn unlimited_quota_emits_no_field() {
        for version in [DovecotVersion::V2_3, DovecotVersion::V2_4] {
            assert!(fields(&mailbox("bob", 0), &BTreeMap::new(), version).is_empty());
        }
    }
}
