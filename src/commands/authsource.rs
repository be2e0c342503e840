//! `authsource`: move mailboxes between mailcow's own passwords and LDAP
//! (`mailbox.authsource`), as mailcow's "Identity Provider" select in the mailbox editor does.
//!
//! Two passes: first every address is checked (mailbox row; for `ldap` also the directory,
//! with the service account and the login's user search, never a bind as the user), then every
//! switch is written in one transaction, one UPDATE per mailbox. A fault in either pass
//! (LDAP, database) therefore writes nothing. Only `mailbox.authsource` changes: the SQL
//! password stays, so switching back to `mailcow` restores the old password.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;

use crate::config::Config;
use crate::deadline::Deadline;
use crate::ldap::{self, DirectoryError, Session, UserSearch};
use crate::log::{Logger, Severity, printable, printable_word};
use crate::login::Refusal;
use crate::mailcow::address;
use crate::mailcow::{
    AuthsourceChange, SettingsError, SqlPassword, Store, StoreError, effective_config,
};

/// Where a mailbox's password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// LDAP, through this program (`mailbox.authsource = 'ldap'`).
    Ldap,
    /// mailcow's own password hash (`mailbox.authsource = 'mailcow'`).
    Mailcow,
}

impl Target {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Target::Ldap => "ldap",
            Target::Mailcow => "mailcow",
        }
    }
}

/// How `authsource` ended; `exit.rs` maps it to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthsourceResult {
    /// Every address switched, would switch (dry run) or already had the target.
    AllDone,
    /// At least one address was refused; the others were switched.
    SomeRefused,
    /// Configuration, LDAP or database: nothing was written.
    Fault,
}

/// A fault: nothing written.
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// What becomes of one address.
enum Decision {
    Refused(String),
    /// Already the target (NULL counts as `mailcow`).
    Unchanged,
    Switch {
        /// `mailbox.username` as stored.
        username: String,
        /// `mailbox.authsource` as read (`None` = NULL).
        from: Option<String>,
        /// Switching to `mailcow` a mailbox whose SQL password is empty.
        no_password: bool,
    },
}

pub(crate) fn run(
    config_path: &Path,
    target: Target,
    addresses: &[String],
    dry_run: bool,
) -> AuthsourceResult {
    let Some(config) = super::load_config(config_path) else {
        return AuthsourceResult::Fault;
    };
    let result = Store::connect(&config.database, config.database.timeout)
        .map_err(Fault::from)
        .and_then(|mut store| {
            // Only a switch to LDAP searches the directory (with mailcow's settings, if so).
            let config = match target {
                Target::Ldap => effective_config(&config, &mut store)?,
                Target::Mailcow => Cow::Borrowed(&config),
            };
            let decisions = decide(&config, &mut store, target, addresses)?;
            let switched = if dry_run {
                Vec::new()
            } else {
                write(&mut store, target, &decisions)?
            };
            Ok((decisions, switched))
        });
    let (decisions, switched) = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("error: {e}; no mailbox was changed");
            return AuthsourceResult::Fault;
        }
    };

    let logger = (!dry_run).then(|| Logger::new(&config.log));
    let mut switched = switched.into_iter();
    let mut result = AuthsourceResult::AllDone;
    for (addr, decision) in decisions {
        match decision {
            Decision::Refused(why) => {
                println!("refused {addr}: {why}");
                result = AuthsourceResult::SomeRefused;
            }
            Decision::Unchanged => println!("unchanged {addr}: already {}", target.as_str()),
            Decision::Switch {
                from, no_password, ..
            } => {
                let change = format!(
                    "{} -> {}",
                    from.as_deref().unwrap_or("mailcow"),
                    target.as_str()
                );
                if dry_run {
                    println!("would switch {addr}: {change}");
                } else if switched.next() == Some(true) {
                    println!("ok {addr}: {change}");
                    if let Some(logger) = &logger {
                        logger.log(
                            Severity::Info,
                            &format!(
                                "authsource user={} result=switched reason=\"{change}\"",
                                printable_word(&addr)
                            ),
                        );
                    }
                } else {
                    println!("refused {addr}: its authsource changed meanwhile; run again");
                    result = AuthsourceResult::SomeRefused;
                    continue;
                }
                if no_password {
                    eprintln!(
                        "warning: {addr} has no mailcow password (an empty mailbox.password, as \
                         LDAP provisioning creates it): it cannot log in until a password is set \
                         in mailcow"
                    );
                }
            }
        }
    }
    result
}

/// The first pass: reads only. Each address (normalised like a login name; repeats are dropped)
/// gets its decision; LDAP is contacted only for mailboxes that would switch to `ldap`.
fn decide(
    config: &Config,
    store: &mut Store,
    target: Target,
    addresses: &[String],
) -> Result<Vec<(String, Decision)>, Fault> {
    let mut session: Option<Session> = None;
    let mut seen = HashSet::new();
    let mut decisions = Vec::new();
    for raw in addresses {
        let addr = match address::normalize(raw) {
            Ok(addr) => addr.username,
            Err(e) => {
                let why = format!("malformed address ({e})");
                decisions.push((printable(raw.trim()), Decision::Refused(why)));
                continue;
            }
        };
        if !seen.insert(addr.clone()) {
            continue;
        }
        let Some(mailbox) = store.mailbox(&addr)? else {
            decisions.push((addr, Decision::Refused("no such mailbox".into())));
            continue;
        };
        let current = mailbox.authsource.as_deref().unwrap_or("mailcow");
        if current == target.as_str() {
            decisions.push((addr, Decision::Unchanged));
            continue;
        }
        let no_password = match target {
            Target::Mailcow => store.sql_password(&mailbox.username)? == SqlPassword::Empty,
            Target::Ldap => {
                if mailbox.is_resource() {
                    decisions.push((addr, Decision::Refused(Refusal::Resource.to_string())));
                    continue;
                }
                let session = match &mut session {
                    Some(session) => session,
                    None => session.insert(ldap::connect(
                        &config.ldap,
                        &Deadline::after(config.deadline),
                    )?),
                };
                let deadline = Deadline::after(config.deadline);
                match session.find_login(raw, &addr, &deadline)? {
                    UserSearch::Found(_) => false,
                    UserSearch::NotFound => {
                        let why = Refusal::NoLdapEntry.to_string();
                        decisions.push((addr, Decision::Refused(why)));
                        continue;
                    }
                    UserSearch::Ambiguous(n) => {
                        let why = Refusal::Ambiguous(n).to_string();
                        decisions.push((addr, Decision::Refused(why)));
                        continue;
                    }
                }
            }
        };
        decisions.push((
            addr,
            Decision::Switch {
                username: mailbox.username,
                from: mailbox.authsource,
                no_password,
            },
        ));
    }
    Ok(decisions)
}

/// The second pass: every switch in one transaction. Per switch (in order): whether it was
/// written.
fn write(
    store: &mut Store,
    target: Target,
    decisions: &[(String, Decision)],
) -> Result<Vec<bool>, Fault> {
    let changes: Vec<AuthsourceChange> = decisions
        .iter()
        .filter_map(|(_, decision)| match decision {
            Decision::Switch { username, from, .. } => Some(AuthsourceChange {
                username: username.clone(),
                from: from.clone(),
                to: target.as_str(),
            }),
            _ => None,
        })
        .collect();
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(store.switch_authsources(&changes)?)
}
