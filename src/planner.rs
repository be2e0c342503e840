//! The provisioning decision, written once: given the mailbox as stored (or none), the LDAP
//! entry's mapping values and the configuration, what should happen — create the mailbox from
//! a template, re-apply its mapped template, nothing, or blocked (a `Blocker` says why).
//!
//! The login flow executes the plan, the sync executes plans in batches, and `test-connection`
//! and dry runs print them. The writes themselves (and their checks on locked rows) live in
//! `mailcow::provision`.

use crate::config::{Config, Mapping};
use crate::mailcow::{Mailbox, RESOURCE_KINDS};
use crate::mapping::mapped_template;

/// The rules of one caller: a login creates when `login_provisioning` is on and always
/// updates; the sync creates when `sync.import_users` is on and updates when
/// `sync.periodic_full_sync` is on. Both map entries by `attribute_mapping` and fall back to
/// `default_template` for creations only.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'c> {
    mapping: &'c [Mapping],
    default_template: Option<&'c str>,
    creates: bool,
    updates: bool,
}

impl<'c> Policy<'c> {
    pub fn login(config: &'c Config) -> Policy<'c> {
        Policy {
            mapping: &config.attribute_mapping,
            default_template: config.default_template.as_deref(),
            creates: config.login_provisioning,
            updates: true,
        }
    }

    pub fn sync(config: &'c Config) -> Policy<'c> {
        Policy {
            mapping: &config.attribute_mapping,
            default_template: config.default_template.as_deref(),
            creates: config.sync.import_users,
            updates: config.sync.periodic_full_sync,
        }
    }

    /// The plan for one mailbox and the mapping values of its LDAP entry.
    pub fn plan(&self, mailbox: MailboxState, mapping_values: &[String]) -> Plan<'c> {
        let mapped = mapped_template(self.mapping, mapping_values);
        match mailbox {
            MailboxState::Missing if !self.creates => Plan::Blocked(Blocker::CreationOff),
            MailboxState::Missing => match mapped.or(self.default_template) {
                Some(template) => Plan::Create(template),
                None => Plan::Blocked(Blocker::NoMapping),
            },
            MailboxState::Existing { .. } => match ldap_backed(mailbox) {
                Err(authsource) => Plan::Blocked(Blocker::NotLdapBacked(authsource)),
                Ok(()) => match mapped {
                    Some(template) if self.updates => Plan::Reapply(template),
                    _ => Plan::Keep,
                },
            },
        }
    }
}

/// The mailbox as far as the decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxState<'a> {
    Missing,
    Existing {
        /// `None` for NULL, which mailcow treats as `mailcow`.
        authsource: Option<&'a str>,
        /// A resource mailbox (room, equipment): never provisioned.
        resource: bool,
    },
}

impl<'a> MailboxState<'a> {
    pub fn of(mailbox: Option<&'a Mailbox>) -> MailboxState<'a> {
        match mailbox {
            None => MailboxState::Missing,
            Some(m) => MailboxState::Existing {
                authsource: m.authsource.as_deref(),
                resource: RESOURCE_KINDS.contains(&m.kind.as_str()),
            },
        }
    }
}

/// What to do with one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan<'c> {
    /// Create the mailbox from this template (mapped, or the default template).
    Create(&'c str),
    /// Re-apply this mapped template (written only if it or the display name changed).
    Reapply(&'c str),
    /// Leave the mailbox as it is: no mapped template (the default template is for creation
    /// only), or the caller does not update.
    Keep,
    Blocked(Blocker),
}

impl std::fmt::Display for Plan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Plan::Create(template) => write!(f, "create the mailbox from template {template}"),
            Plan::Reapply(template) => write!(f, "re-apply template {template} if it changed"),
            Plan::Keep => f.write_str("keep the mailbox as it is"),
            Plan::Blocked(blocker) => write!(f, "blocked: {blocker}"),
        }
    }
}

/// Why nothing may be provisioned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocker {
    /// No mailbox, and this caller does not create any (`login_provisioning` or
    /// `sync.import_users` off).
    #[error("no mailbox, and creation is off")]
    CreationOff,
    /// No mailbox, no mapping for the entry's values and no `default_template`.
    #[error("no attribute mapping and no default_template")]
    NoMapping,
    /// The mailbox checks its password elsewhere (this authsource), or is a resource.
    #[error("mailbox not LDAP-backed (authsource {0})")]
    NotLdapBacked(String),
}

/// Only LDAP-backed mailboxes that are not resources are provisioned (and log in against
/// LDAP). `Err`: the authsource the mailbox has (NULL counts as mailcow).
pub fn ldap_backed(mailbox: MailboxState) -> Result<(), String> {
    match mailbox {
        MailboxState::Missing => Ok(()),
        MailboxState::Existing {
            authsource,
            resource,
        } => {
            let authsource = authsource.unwrap_or("mailcow");
            if authsource == "ldap" && !resource {
                Ok(())
            } else {
                Err(authsource.to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDAP: MailboxState = MailboxState::Existing {
        authsource: Some("ldap"),
        resource: false,
    };
    const MISSING: MailboxState = MailboxState::Missing;

    fn policy(mapping: &[Mapping], creates: bool, updates: bool) -> Policy<'_> {
        Policy {
            mapping,
            default_template: Some("Default"),
            creates,
            updates,
        }
    }

    fn staff() -> Vec<Mapping> {
        vec![Mapping {
            attribute: "staff".into(),
            template: "Staff".into(),
        }]
    }

    fn values(v: &str) -> Vec<String> {
        vec![v.into()]
    }

    #[test]
    fn missing_mailboxes_are_created_from_the_mapped_or_default_template() {
        let m = staff();
        let p = policy(&m, true, true);
        assert_eq!(p.plan(MISSING, &values("staff")), Plan::Create("Staff"));
        assert_eq!(p.plan(MISSING, &[]), Plan::Create("Default"));
        let p = Policy {
            default_template: None,
            ..p
        };
        assert_eq!(p.plan(MISSING, &[]), Plan::Blocked(Blocker::NoMapping));
    }

    #[test]
    fn creation_and_updates_follow_the_callers_switches() {
        let m = staff();
        let p = policy(&m, false, false);
        assert_eq!(
            p.plan(MISSING, &values("staff")),
            Plan::Blocked(Blocker::CreationOff)
        );
        assert_eq!(p.plan(LDAP, &values("staff")), Plan::Keep);
        let p = policy(&m, true, true);
        assert_eq!(p.plan(LDAP, &values("staff")), Plan::Reapply("Staff"));
    }

    #[test]
    fn only_a_mapped_template_updates() {
        let m = staff();
        let p = policy(&m, true, true);
        assert_eq!(p.plan(LDAP, &values("other")), Plan::Keep);
        assert_eq!(p.plan(LDAP, &[]), Plan::Keep);
    }

    #[test]
    fn other_authsources_and_resources_are_blocked() {
        let m = staff();
        let p = policy(&m, true, true);
        let other = |authsource, resource| MailboxState::Existing {
            authsource,
            resource,
        };
        for (state, authsource) in [
            (other(None, false), "mailcow"),
            (other(Some("keycloak"), false), "keycloak"),
            (other(Some("ldap"), true), "ldap"),
        ] {
            assert_eq!(
                p.plan(state, &values("staff")),
                Plan::Blocked(Blocker::NotLdapBacked(authsource.into()))
            );
        }
    }
}
