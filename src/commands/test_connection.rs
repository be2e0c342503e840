//! `test-connection`: what an admin runs first when logins fail. It follows mailcow's LDAP
//! troubleshooting checklist: every host reachable and the service bind accepted, the base DN
//! readable, the database reachable, the mapped templates present, and — for one user — the
//! entry found, the template it maps to, and whether a first login could create its mailbox.

use std::borrow::Cow;
use std::path::Path;

use super::check_report::{Format, MailboxFindings, NextLogin, Report, Status, UserFindings};
use crate::config::{Config, SettingOrigin};
use crate::deadline::Deadline;
use crate::ldap::{self, Session, UserSearch};
use crate::login::{Refusal, normalize_login};
use crate::mailcow::provision::{self, Preview, ProvisionError};
use crate::mailcow::{Store, effective_config};
use crate::mapping::mapped_template;
use crate::planner::{self, MailboxState, Plan, Policy};

/// The worst check's status.
pub fn run(config_path: &Path, user: Option<&str>, format: Format) -> Status {
    let mut report = Report::new(format);
    let file_config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            report.check("configuration", false, e.to_string());
            return report.finish();
        }
    };
    report.check(
        "configuration",
        true,
        format!("configuration {}", config_path.display()),
    );
    for warning in &file_config.warnings {
        report.warn("configuration", warning);
    }

    // The database first: with ldap.from_mailcow it holds the LDAP settings.
    let deadline = Deadline::after(file_config.deadline);
    let timeout = deadline
        .cap(file_config.database.timeout)
        .unwrap_or_default();
    let mut store = match Store::connect(&file_config.database, timeout) {
        Ok(store) => Some(store),
        Err(e) => {
            report.check("database", false, e.to_string());
            None
        }
    };
    let config = match &mut store {
        Some(store) => match effective_config(&file_config, store) {
            Ok(config) => config,
            Err(e) => {
                report.check("configuration", false, e.to_string());
                return report.finish();
            }
        },
        None if file_config.reads_mailcow_settings() => {
            report.check(
                "configuration",
                false,
                "LDAP settings not read (ldap.from_mailcow, database down)",
            );
            return report.finish();
        }
        None => Cow::Borrowed(&file_config),
    };
    let origins: Vec<(&'static str, String)> = config
        .setting_origins()
        .into_iter()
        .map(|(setting, origin)| {
            let from = match origin {
                SettingOrigin::File => config_path.display().to_string(),
                SettingOrigin::Mailcow(key) => format!("mailcow (identity_provider.{key})"),
            };
            (setting, from)
        })
        .collect();
    for (setting, from) in &origins {
        report.info(format!("{setting}: from {from}"));
    }
    report.settings = origins.into_iter().collect();
    for warning in config.ldap.exposure_warnings() {
        report.warn("ldap", warning);
    }

    // Every host on its own; the first one that works serves the user check.
    let mut session = None;
    for host in &config.ldap.hosts {
        let deadline = Deadline::after(config.deadline);
        match ldap::connect_to(&config.ldap, host, &deadline) {
            Ok(mut s) => {
                let ldap = &config.ldap;
                report.check(
                    "ldap_bind",
                    true,
                    format!("LDAP {host}:{} bind as {}", ldap.port, ldap.bind_dn),
                );
                match s.base_dn_exists(&deadline) {
                    Ok(()) => report.check(
                        "ldap_base_dn",
                        true,
                        format!("LDAP base DN {}", ldap.base_dn),
                    ),
                    Err(e) => report.check("ldap_base_dn", false, e.to_string()),
                }
                session.get_or_insert(s);
            }
            Err(e) => report.check("ldap_bind", false, e.to_string()),
        }
    }

    if let Some(store) = &mut store {
        check_database(&config, store, &mut report);
    }
    if let Some(user) = user {
        let mut findings = UserFindings {
            address: user.to_owned(),
            ..UserFindings::default()
        };
        check_user(
            &config,
            session.as_mut(),
            store.as_mut(),
            &mut findings,
            &mut report,
        );
        report.user = Some(findings);
    }
    report.finish()
}

fn check_database(config: &Config, store: &mut Store, report: &mut Report) {
    match store.schema_version() {
        Ok(version) => report.check(
            "database",
            true,
            format!(
                "database {} (mailcow schema {version})",
                config.database.name
            ),
        ),
        Err(e) => report.check("database", false, e.to_string()),
    }
    let mut wanted: Vec<&str> = config
        .attribute_mapping
        .iter()
        .map(|m| m.template.as_str())
        .chain(config.default_template.as_deref())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    match store.template_names() {
        Ok(existing) => {
            for name in wanted {
                let found = existing.iter().any(|e| e == name);
                report.check(
                    "template",
                    found,
                    format!("mailbox template '{name}' exists"),
                );
            }
        }
        Err(e) => report.check("template", false, e.to_string()),
    }
}

/// What a login of `user` would find: the entry, its template and the mailbox (no bind as the
/// user, nothing written). `found.address` holds the login as given.
fn check_user(
    config: &Config,
    session: Option<&mut Session>,
    store: Option<&mut Store>,
    found: &mut UserFindings,
    report: &mut Report,
) {
    let user = found.address.clone();
    let address = match normalize_login(&user) {
        Ok(address) => address,
        Err(e) => {
            let detail = format!("{user}: malformed address ({e})");
            return report.check("user_address", false, detail);
        }
    };
    found.address = address.clone();
    let (Some(session), Some(store)) = (session, store) else {
        return report.check(
            "user_entry",
            false,
            format!("{address}: not checked (LDAP or database down)"),
        );
    };
    let deadline = Deadline::after(config.deadline);
    let entry = match session.find_login(&user, &address, &deadline) {
        Ok(UserSearch::Found(entry)) => entry,
        Ok(UserSearch::NotFound) => {
            let detail = format!("{address}: {}", Refusal::NoLdapEntry);
            return report.check("user_entry", false, detail);
        }
        Ok(UserSearch::Ambiguous(n)) => {
            let detail = format!("{address}: {}", Refusal::Ambiguous(n));
            return report.check("user_entry", false, detail);
        }
        Err(e) => return report.check("user_entry", false, e.to_string()),
    };
    report.check(
        "user_entry",
        true,
        format!("{address}: LDAP entry {}", entry.dn),
    );
    let attribute = config
        .ldap
        .attribute_field
        .as_deref()
        .unwrap_or("(no attribute_field)");
    report.info(format!("{attribute}: {:?}", entry.mapping_values));
    report.info(format!(
        "{}: {:?}",
        config.ldap.name_field, entry.display_name
    ));
    let mapped = mapped_template(&config.attribute_mapping, &entry.mapping_values);
    found.dn = Some(entry.dn.clone());
    found.attribute_values = entry.mapping_values.clone();
    found.display_name = entry.display_name.clone();
    found.mapped_template = mapped.map(str::to_owned);

    let name = entry.display_name.as_deref();
    let existing = match store.mailbox(&address) {
        Ok(mailbox) => mailbox,
        Err(e) => return report.check("user_mailbox", false, e.to_string()),
    };
    let plan =
        Policy::login(config).plan(MailboxState::of(existing.as_ref()), &entry.mapping_values);
    let refuse = |found: &mut UserFindings, report: &mut Report, why: String| {
        report.check("user_next_login", false, format!("{address}: {why}"));
        found.next_login = Some(NextLogin::Refused { reason: why });
    };
    if let Some(mailbox) = existing {
        let authsource = mailbox.authsource.as_deref().unwrap_or("mailcow");
        report.check(
            "user_mailbox",
            authsource == "ldap",
            format!(
                "{address}: mailbox exists (authsource {authsource}, active {}, domain active {:?})",
                mailbox.active, mailbox.domain_active
            ),
        );
        found.mailbox = Some(MailboxFindings {
            authsource: authsource.to_owned(),
            active: mailbox.active,
            domain_active: mailbox.domain_active,
        });
        let template = match plan {
            Plan::Reapply(template) => template,
            Plan::Blocked(planner::Blocker::NotLdapBacked(authsource)) => {
                return not_ldap_backed(found, report, &authsource);
            }
            _ => {
                let reason = "no mapped template: logins leave the mailbox as it is";
                found.next_login = Some(NextLogin::Nothing {
                    reason: reason.into(),
                });
                return report.info(reason);
            }
        };
        let loaded = match store.template(template) {
            Ok(loaded) => loaded,
            Err(e) => return report.check("user_next_login", false, e.to_string()),
        };
        match provision::preview_apply(store, &mailbox, name, template, loaded.as_ref()) {
            Ok(Preview::Write { .. }) => {
                found.next_login = Some(NextLogin::Reapply {
                    template: template.into(),
                });
                report.info(format!("the next login re-applies template {template}"))
            }
            Ok(Preview::Nothing) => {
                let reason = format!("template {template} is up to date");
                report.info(&reason);
                found.next_login = Some(NextLogin::Nothing { reason });
            }
            Ok(Preview::Skipped { reason, .. }) => refuse(found, report, reason),
            Ok(Preview::NotLdapBacked(authsource)) => not_ldap_backed(found, report, &authsource),
            Err(e) => report.check("user_next_login", false, e.to_string()),
        }
        return;
    }
    let template = match plan {
        Plan::Create(template) => template,
        Plan::Blocked(planner::Blocker::NoMapping) => {
            let values = format!("{:?}", entry.mapping_values);
            return refuse(found, report, Refusal::NoMapping(values).to_string());
        }
        _ => return refuse(found, report, Refusal::ProvisioningOff.to_string()),
    };
    let loaded = match store.template(template) {
        Ok(loaded) => loaded,
        Err(e) => return report.check("user_next_login", false, e.to_string()),
    };
    match provision::preview_create(store, &address, name, template, loaded.as_ref()) {
        Ok(_) => {
            found.next_login = Some(NextLogin::Create {
                template: template.into(),
            });
            report.check(
                "user_next_login",
                true,
                format!("{address}: a first login creates the mailbox from template {template}"),
            )
        }
        Err(ProvisionError::Refused(why)) => {
            refuse(found, report, format!("a first login is refused: {why}"))
        }
        Err(ProvisionError::Store(e)) => report.check("user_next_login", false, e.to_string()),
    }
}

/// A mailbox of another authsource: its logins are refused (the next passdb decides).
fn not_ldap_backed(found: &mut UserFindings, report: &mut Report, authsource: &str) {
    let reason =
        format!("authsource {authsource}: logins are refused and the template is not applied");
    report.info(&reason);
    found.next_login = Some(NextLogin::Refused { reason });
}
