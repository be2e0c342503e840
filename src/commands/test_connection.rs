//! `test-connection`: what an admin runs first when logins fail. It follows mailcow's LDAP
//! troubleshooting checklist: every host reachable and the service bind accepted, the base DN
//! readable, the database reachable, the mapped templates present, and — for one user — the
//! entry found, the template it maps to, and whether a first login could create its mailbox.

use std::path::Path;

use crate::config::Config;
use crate::deadline::Deadline;
use crate::exit::ExitCode;
use crate::ldap::{self, Session, UserSearch};
use crate::login::{Refusal, normalize_login};
use crate::mailcow::Store;
use crate::mailcow::provision::{self, Preview, ProvisionError};
use crate::mailcow::template::{self, Template};
use crate::mapping::mapped_template;

/// Prints one check per line and remembers whether all passed.
struct Report {
    healthy: bool,
}

impl Report {
    fn check(&mut self, ok: bool, line: impl AsRef<str>) {
        println!("{} {}", if ok { "ok   " } else { "FAIL " }, line.as_ref());
        self.healthy &= ok;
    }

    fn info(&self, line: impl AsRef<str>) {
        println!("      {}", line.as_ref());
    }
}

pub fn run(config_path: &Path, user: Option<&str>) -> ExitCode {
    let Some(config) = super::load_config(config_path) else {
        return ExitCode::TempFail;
    };
    let mut report = Report { healthy: true };
    report.check(true, format!("configuration {}", config_path.display()));
    for warning in config.ldap.exposure_warnings() {
        eprintln!("warning: {warning}");
    }

    // Every host on its own; the first one that works serves the user check.
    let mut session = None;
    for host in &config.ldap.hosts {
        let deadline = Deadline::after(config.deadline);
        match ldap::connect_to(&config.ldap, host, &deadline) {
            Ok(mut s) => {
                let ldap = &config.ldap;
                report.check(
                    true,
                    format!("LDAP {host}:{} bind as {}", ldap.port, ldap.bind_dn),
                );
                match s.base_dn_exists(&deadline) {
                    Ok(()) => report.check(true, format!("LDAP base DN {}", ldap.base_dn)),
                    Err(e) => report.check(false, e.to_string()),
                }
                session.get_or_insert(s);
            }
            Err(e) => report.check(false, e.to_string()),
        }
    }

    let deadline = Deadline::after(config.deadline);
    let timeout = deadline.cap(config.database.timeout).unwrap_or_default();
    let mut store = match Store::connect(&config.database, timeout) {
        Ok(store) => Some(store),
        Err(e) => {
            report.check(false, e.to_string());
            None
        }
    };
    if let Some(store) = &mut store {
        check_database(&config, store, &mut report);
    }
    if let Some(user) = user {
        check_user(&config, session.as_mut(), store.as_mut(), user, &mut report);
    }
    if report.healthy {
        ExitCode::Ok
    } else {
        ExitCode::TempFail
    }
}

fn check_database(config: &Config, store: &mut Store, report: &mut Report) {
    match template::schema_version(store) {
        Ok(version) => report.check(
            true,
            format!(
                "database {} (mailcow schema {version})",
                config.database.name
            ),
        ),
        Err(e) => report.check(false, e.to_string()),
    }
    let mut wanted: Vec<&str> = config
        .attribute_mapping
        .iter()
        .map(|m| m.template.as_str())
        .chain(config.default_template.as_deref())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    match template::mailbox_template_names(store) {
        Ok(existing) => {
            for name in wanted {
                let found = existing.iter().any(|e| e == name);
                report.check(found, format!("mailbox template '{name}' exists"));
            }
        }
        Err(e) => report.check(false, e.to_string()),
    }
}

/// What a login of `user` would find: the entry, its template and the mailbox (no bind as the
/// user, nothing written).
fn check_user(
    config: &Config,
    session: Option<&mut Session>,
    store: Option<&mut Store>,
    user: &str,
    report: &mut Report,
) {
    let address = match normalize_login(user) {
        Ok(address) => address,
        Err(e) => return report.check(false, format!("{user}: malformed address ({e})")),
    };
    let (Some(session), Some(store)) = (session, store) else {
        return report.check(
            false,
            format!("{address}: not checked (LDAP or database down)"),
        );
    };
    let deadline = Deadline::after(config.deadline);
    let entry = match session.find_login(user, &address, &deadline) {
        Ok(UserSearch::Found(entry)) => entry,
        Ok(UserSearch::NotFound) => {
            return report.check(false, format!("{address}: {}", Refusal::NoLdapEntry));
        }
        Ok(UserSearch::Ambiguous(n)) => {
            return report.check(false, format!("{address}: {}", Refusal::Ambiguous(n)));
        }
        Err(e) => return report.check(false, e.to_string()),
    };
    report.check(true, format!("{address}: LDAP entry {}", entry.dn));
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
    let name = entry.display_name.as_deref();
    let existing = match store.mailbox(&address) {
        Ok(mailbox) => mailbox,
        Err(e) => return report.check(false, e.to_string()),
    };
    if let Some(mailbox) = existing {
        let authsource = mailbox.authsource.as_deref().unwrap_or("mailcow");
        report.check(
            authsource == "ldap",
            format!(
                "{address}: mailbox exists (authsource {authsource}, active {}, domain active {:?})",
                mailbox.active, mailbox.domain_active
            ),
        );
        let Some(template) = mapped else {
            return report.info("no mapped template: logins leave the mailbox as it is");
        };
        let loaded = match Template::load(store, template) {
            Ok(loaded) => loaded,
            Err(e) => return report.check(false, e.to_string()),
        };
        match provision::preview_apply(store, &mailbox, name, template, loaded.as_ref()) {
            Ok(Preview::Write) => {
                report.info(format!("the next login re-applies template {template}"))
            }
            Ok(Preview::Nothing) => report.info(format!("template {template} is up to date")),
            Ok(Preview::Skipped(why)) => report.check(false, format!("{address}: {why}")),
            Err(e) => report.check(false, e.to_string()),
        }
        return;
    }
    if !config.login_provisioning {
        return report.check(false, format!("{address}: {}", Refusal::ProvisioningOff));
    }
    let Some(template) = mapped.or(config.default_template.as_deref()) else {
        let values = format!("{:?}", entry.mapping_values);
        return report.check(false, format!("{address}: {}", Refusal::NoMapping(values)));
    };
    let loaded = match Template::load(store, template) {
        Ok(loaded) => loaded,
        Err(e) => return report.check(false, e.to_string()),
    };
    match provision::preview_create(store, &address, name, template, loaded.as_ref()) {
        Ok(_) => report.check(
            true,
            format!("{address}: a first login creates the mailbox from template {template}"),
        ),
        Err(ProvisionError::Refused(why)) => {
            report.check(false, format!("{address}: a first login is refused: {why}"))
        }
        Err(ProvisionError::Store(e)) => report.check(false, e.to_string()),
    }
}
