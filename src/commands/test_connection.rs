//! `test-connection`: what an admin runs first when logins fail.

use std::path::Path;

use crate::deadline::Deadline;
use crate::exit::ExitCode;
use crate::ldap;
use crate::mailcow::{Store, template};

pub fn run(config_path: &Path) -> ExitCode {
    let Some(config) = super::load_config(config_path) else {
        return ExitCode::TempFail;
    };
    println!("ok    configuration {}", config_path.display());
    let mut healthy = true;
    let mut check = |ok: bool, line: String| {
        println!("{} {line}", if ok { "ok   " } else { "FAIL " });
        healthy &= ok;
    };

    for host in &config.ldap.hosts {
        let deadline = Deadline::after(config.deadline);
        match ldap::connect_to(&config.ldap, host, &deadline) {
            Ok(mut session) => {
                check(
                    true,
                    format!(
                        "LDAP {host}:{} bind as {}",
                        config.ldap.port, config.ldap.bind_dn
                    ),
                );
                match session.base_dn_exists(&deadline) {
                    Ok(()) => check(true, format!("LDAP base DN {}", config.ldap.base_dn)),
                    Err(e) => check(false, e.to_string()),
                }
            }
            Err(e) => check(false, e.to_string()),
        }
    }

    let deadline = Deadline::after(config.deadline);
    let timeout = deadline
        .cap(config.ldap.connect_timeout)
        .unwrap_or_default();
    match Store::connect(&config.database, timeout) {
        Ok(mut store) => {
            match template::schema_version(&mut store) {
                Ok(version) => check(
                    true,
                    format!(
                        "database {} (mailcow schema {version})",
                        config.database.name
                    ),
                ),
                Err(e) => check(false, e.to_string()),
            }
            let mut wanted: Vec<&str> = config
                .attribute_mapping
                .iter()
                .map(|m| m.template.as_str())
                .chain(config.default_template.as_deref())
                .collect();
            wanted.sort_unstable();
            wanted.dedup();
            match template::mailbox_template_names(&mut store) {
                Ok(existing) => {
                    for name in wanted {
                        check(
                            existing.iter().any(|e| e == name),
                            format!("mailbox template '{name}' exists"),
                        );
                    }
                }
                Err(e) => check(false, e.to_string()),
            }
        }
        Err(e) => check(false, e.to_string()),
    }
    if healthy {
        ExitCode::Ok
    } else {
        ExitCode::TempFail
    }
}
