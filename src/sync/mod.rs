//! `sync`: import LDAP users as mailboxes and re-apply changed templates to existing ones, for
//! cron or a systemd timer — mailcow's `ldap-sync.php` semantics without its bugs.
//!
//! One run: lock → interval check → service bind + paged listing of every user → all mailboxes
//! in one query → per entry: create (`sync.import_users`) or re-apply the mapped template
//! (`sync.periodic_full_sync`, LDAP-backed mailboxes only), through the same mapping and
//! provisioning code as a login → summary line → time of the run recorded.
//!
//! Differences from mailcow: users without the attribute field are seen too (they get the
//! default template on import); the address is normalised like a login (case, IDN); an address
//! carried by several entries is left out instead of flip-flopping between them; nothing is
//! logged for entries that need nothing; a failed run does not count for the interval.

pub mod state;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, StderrLevel};
use crate::deadline::Deadline;
use crate::exit::ExitCode;
use crate::ldap::{self, DirectoryError, ListedUser};
use crate::log::{Logger, Severity, printable, printable_word};
use crate::login::{describe_values, with_skipped};
use crate::mailcow::address;
use crate::mailcow::provision::{self, Applied, Preview, ProvisionError};
use crate::mailcow::template::Template;
use crate::mailcow::{Mailbox, SettingsError, Store, StoreError, effective_config};
use crate::mapping::mapped_template;
use state::StateDir;

/// Where the lock and the time of the last completed run live unless `--state-dir` says.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mailcow-ldap-auth";

pub struct Options {
    /// Report what would be written; write nothing (no lock, no state, no database writes).
    pub dry_run: bool,
    /// Run even when `sync.interval_minutes` have not passed since the last completed run.
    pub force: bool,
    pub state_dir: PathBuf,
}

/// A fault that ends the run: exit 111, the time of the run not recorded.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// What happened to each entry of the listing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub created: u64,
    pub reapplied: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub failed: u64,
    pub entries: u64,
}

impl Counts {
    fn summary(&self, started: Instant) -> String {
        format!(
            "created={} reapplied={} unchanged={} skipped={} failed={} entries={} ms={}",
            self.created,
            self.reapplied,
            self.unchanged,
            self.skipped,
            self.failed,
            self.entries,
            started.elapsed().as_millis()
        )
    }
}

/// Where the lines of a run go: the log (syslog + stderr per config), or for a dry run
/// standard output only (it changes nothing, so it leaves no trace in the mail log).
enum Output<'a> {
    Log(&'a Logger),
    DryRun,
}

impl Output<'_> {
    fn line(&self, severity: Severity, text: &str) {
        match self {
            Output::Log(logger) => logger.log(severity, &format!("sync {text}")),
            Output::DryRun => println!("sync dry-run {text}"),
        }
    }
}

pub fn run(config_path: &Path, options: &Options) -> ExitCode {
    let started = Instant::now();
    let fault = |e: &dyn std::fmt::Display| {
        format!(
            "result=tempfail reason=\"{}\" ms={}",
            printable(&e.to_string()),
            started.elapsed().as_millis()
        )
    };
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            Logger::fallback().log(Severity::Error, &format!("sync {}", fault(&e)));
            return ExitCode::TempFail;
        }
    };
    let logger = Logger::new(&config.log);
    for warning in &config.warnings {
        logger.log(Severity::Warning, warning);
    }
    if !config.sync.import_users && !config.sync.periodic_full_sync {
        println!("sync is off (sync.import_users and sync.periodic_full_sync are false)");
        return ExitCode::Ok;
    }

    if options.dry_run {
        let out = Output::DryRun;
        return match synchronise(&config, &out) {
            Ok(counts) => {
                out.line(Severity::Info, &counts.summary(started));
                ExitCode::Ok
            }
            Err(e) => {
                out.line(Severity::Error, &fault(&e));
                ExitCode::TempFail
            }
        };
    }

    let state = match StateDir::open(&options.state_dir) {
        Ok(state) => state,
        Err(e) => {
            logger.log(Severity::Error, &format!("sync {}", fault(&e)));
            return ExitCode::TempFail;
        }
    };
    let _lock = match state.try_lock() {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            logger.log(
                Severity::Warning,
                &format!(
                    "sync already running (another run holds {})",
                    state.lock_path().display()
                ),
            );
            return ExitCode::Ok;
        }
        Err(e) => {
            logger.log(Severity::Error, &format!("sync {}", fault(&e)));
            return ExitCode::TempFail;
        }
    };
    let now = SystemTime::now();
    if !options.force {
        let interval = Duration::from_secs(config.sync.interval_minutes.saturating_mul(60));
        match state.last_run() {
            // Not due: silent, as timers start the command more often than runs are due.
            Ok(state::LastRun::At(last)) if !state::due(last, now, interval) => {
                if std::io::stdout().is_terminal() {
                    println!(
                        "sync not due: the last run started less than {} minutes ago \
                         (--force runs it now)",
                        config.sync.interval_minutes
                    );
                }
                return ExitCode::Ok;
            }
            Ok(state::LastRun::Unreadable(why)) => {
                logger.log(Severity::Warning, &format!("sync: {why}"))
            }
            Ok(_) => {}
            Err(e) => {
                logger.log(Severity::Error, &format!("sync {}", fault(&e)));
                return ExitCode::TempFail;
            }
        }
    }

    match synchronise(&config, &Output::Log(&logger)) {
        Ok(counts) => {
            let summary = counts.summary(started);
            logger.log(Severity::Info, &format!("sync {summary}"));
            if std::io::stdout().is_terminal() && config.log.stderr != StderrLevel::All {
                println!("sync {summary}");
            }
            // A run that cannot be recorded is repeated by the next timer: say so loudly.
            if let Err(e) = state.record(now) {
                logger.log(Severity::Error, &format!("sync {}", fault(&e)));
                return ExitCode::TempFail;
            }
            ExitCode::Ok
        }
        Err(e) => {
            logger.log(Severity::Error, &format!("sync {}", fault(&e)));
            ExitCode::TempFail
        }
    }
}

/// One pass over the directory. Per-entry refusals are counted and logged; a directory or
/// database fault ends the pass (every mailbox written so far was one complete transaction).
fn synchronise(config: &Config, out: &Output) -> Result<Counts, SyncError> {
    let mut store = Store::connect(&config.database, config.database.timeout)?
        .with_redis(config.redis.as_ref());
    let config = &*effective_config(config, &mut store)?;
    let deadline = Deadline::after(config.deadline);
    let mut session = ldap::connect(&config.ldap, &deadline)?;
    let users = session.all_users()?;
    drop(session);

    // mailcow keys mailboxes by the lower-case address; its collation compares without case.
    let mailboxes: HashMap<String, Result<Mailbox, String>> = store
        .all_mailboxes()?
        .into_iter()
        .map(|row| match row {
            Ok(m) => (m.username.to_lowercase(), Ok(m)),
            Err(bad) => (bad.username.to_lowercase(), Err(bad.error.to_string())),
        })
        .collect();

    let field = &config.ldap.username_field;
    let addresses: Vec<Result<String, String>> =
        users.iter().map(|u| address_of(u, field)).collect();
    let mut carriers: HashMap<&str, usize> = HashMap::new();
    for a in addresses.iter().flatten() {
        *carriers.entry(a.as_str()).or_default() += 1;
    }

    let mut run = Run {
        config,
        store,
        templates: Templates::default(),
        dry_run: matches!(out, Output::DryRun),
    };
    let mut counts = Counts::default();
    for (user, address) in users.iter().zip(&addresses) {
        let (who, outcome) = match address {
            Err(why) => (
                format!("dn=\"{}\"", printable(&user.entry.dn)),
                Outcome::warn(Kind::Skipped, why.clone()),
            ),
            Ok(addr) => {
                let n = carriers[addr.as_str()];
                let outcome = if n > 1 {
                    Outcome::warn(
                        Kind::Skipped,
                        format!(
                            "ambiguous: {n} LDAP entries carry this address; {} left out",
                            user.entry.dn
                        ),
                    )
                } else {
                    run.entry(addr, user, mailboxes.get(addr))?
                };
                (format!("user={}", printable_word(addr)), outcome)
            }
        };
        counts.entries += 1;
        match outcome.kind {
            Kind::Created => counts.created += 1,
            Kind::Reapplied => counts.reapplied += 1,
            Kind::Unchanged => counts.unchanged += 1,
            Kind::Skipped => counts.skipped += 1,
            Kind::Failed => counts.failed += 1,
        }
        if let Some((severity, reason)) = outcome.note {
            out.line(
                severity,
                &format!(
                    "{who} result={} reason=\"{}\"",
                    outcome.kind.word(),
                    printable(&reason)
                ),
            );
        }
    }
    Ok(counts)
}

/// The address of an entry: the first value of the username field, normalised as a login is.
fn address_of(user: &ListedUser, field: &str) -> Result<String, String> {
    let Some(value) = user.usernames.first().filter(|v| !v.trim().is_empty()) else {
        return Err(format!("empty {field}"));
    };
    address::normalize(value)
        .map(|a| a.username)
        .map_err(|e| format!("{field} '{value}' is not a mail address: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    Reapplied,
    Unchanged,
    Skipped,
    Failed,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Created => "created",
            Kind::Reapplied => "reapplied",
            Kind::Unchanged => "unchanged",
            Kind::Skipped => "skipped",
            Kind::Failed => "failed",
        }
    }
}

struct Outcome {
    kind: Kind,
    /// The log line's severity and reason; `None`: nothing worth a line.
    note: Option<(Severity, String)>,
}

impl Outcome {
    fn quiet(kind: Kind) -> Outcome {
        Outcome { kind, note: None }
    }
    fn info(kind: Kind, reason: String) -> Outcome {
        Outcome {
            kind,
            note: Some((Severity::Info, reason)),
        }
    }
    fn warn(kind: Kind, reason: String) -> Outcome {
        Outcome {
            kind,
            note: Some((Severity::Warning, reason)),
        }
    }
}

/// Mailbox templates, each loaded once per run (a run applies one template to many mailboxes).
#[derive(Default)]
struct Templates {
    /// `Err`: the stored template is broken (its message); every mailbox using it fails.
    loaded: HashMap<String, Result<Option<Template>, String>>,
}

impl Templates {
    fn get(
        &mut self,
        store: &mut Store,
        name: &str,
    ) -> Result<Result<Option<&Template>, String>, StoreError> {
        if !self.loaded.contains_key(name) {
            let loaded = match store.template(name) {
                Ok(t) => Ok(t),
                Err(StoreError::Data(why)) => Err(why),
                Err(e) => return Err(e),
            };
            self.loaded.insert(name.to_owned(), loaded);
        }
        Ok(match &self.loaded[name] {
            Ok(t) => Ok(t.as_ref()),
            Err(why) => Err(why.clone()),
        })
    }
}

struct Run<'c> {
    config: &'c Config,
    store: Store,
    templates: Templates,
    dry_run: bool,
}

impl Run<'_> {
    fn entry(
        &mut self,
        addr: &str,
        user: &ListedUser,
        mailbox: Option<&Result<Mailbox, String>>,
    ) -> Result<Outcome, SyncError> {
        let config = self.config;
        let sync = &config.sync;
        let mapped = mapped_template(&config.attribute_mapping, &user.entry.mapping_values);
        let name = user.entry.display_name.as_deref();
        match mailbox {
            None if !sync.import_users => Ok(Outcome::quiet(Kind::Skipped)),
            None => match mapped.or(config.default_template.as_deref()) {
                Some(template) => self.create(addr, name, template),
                None => Ok(Outcome::warn(
                    Kind::Skipped,
                    format!(
                        "no attribute mapping for {addr} ({}) and no default_template",
                        describe_values(&user.entry.mapping_values)
                    ),
                )),
            },
            Some(Err(why)) => Ok(Outcome::warn(Kind::Failed, why.clone())),
            // Mailboxes of another authsource, and resources, are never touched.
            Some(Ok(m)) if m.is_resource() || m.authsource.as_deref() != Some("ldap") => {
                Ok(Outcome::quiet(Kind::Skipped))
            }
            // Only a mapped template updates; the default template is for creation only.
            Some(Ok(m)) => match mapped {
                Some(template) if sync.periodic_full_sync => self.apply(m, name, template),
                _ => Ok(Outcome::quiet(Kind::Skipped)),
            },
        }
    }

    fn create(
        &mut self,
        addr: &str,
        name: Option<&str>,
        template_name: &str,
    ) -> Result<Outcome, SyncError> {
        let template = match self.templates.get(&mut self.store, template_name)? {
            Ok(t) => t,
            Err(why) => return Ok(Outcome::warn(Kind::Failed, why)),
        };
        let store = &mut self.store;
        if self.dry_run {
            return match provision::preview_create(store, addr, name, template_name, template) {
                Ok(Preview::Write) => Ok(Outcome::info(
                    Kind::Created,
                    format!("would create the mailbox from template {template_name}"),
                )),
                Ok(_) => Ok(Outcome::quiet(Kind::Unchanged)),
                Err(e) => refused(e),
            };
        }
        match provision::create_from(store, addr, name, template_name, template) {
            Ok(done) if done.created => Ok(Outcome::info(
                Kind::Created,
                with_skipped(
                    format!("mailbox created from template {template_name}"),
                    &done.skipped,
                ),
            )),
            Ok(_) => Ok(Outcome::info(
                Kind::Unchanged,
                "mailbox created meanwhile by a login".into(),
            )),
            Err(e) => refused(e),
        }
    }

    fn apply(
        &mut self,
        mailbox: &Mailbox,
        name: Option<&str>,
        template_name: &str,
    ) -> Result<Outcome, SyncError> {
        let template = match self.templates.get(&mut self.store, template_name)? {
            Ok(t) => t,
            Err(why) => return Ok(Outcome::warn(Kind::Failed, why)),
        };
        let store = &mut self.store;
        if self.dry_run {
            return match provision::preview_apply(store, mailbox, name, template_name, template) {
                Ok(Preview::Write) => Ok(Outcome::info(
                    Kind::Reapplied,
                    format!("would re-apply template {template_name}"),
                )),
                Ok(Preview::Nothing) => Ok(Outcome::quiet(Kind::Unchanged)),
                Ok(Preview::Skipped(why)) => Ok(Outcome::warn(Kind::Skipped, why)),
                Ok(Preview::NotLdapBacked(authsource)) => Ok(switched_meanwhile(&authsource)),
                Err(e) => refused(e),
            };
        }
        match provision::apply_loaded(store, mailbox, name, template_name, template) {
            Ok(Applied::Unchanged) => Ok(Outcome::quiet(Kind::Unchanged)),
            Ok(Applied::Reapplied { skipped, .. }) => Ok(Outcome::info(
                Kind::Reapplied,
                with_skipped(format!("template {template_name} re-applied"), &skipped),
            )),
            Ok(Applied::Skipped { reason, .. }) => Ok(Outcome::warn(Kind::Skipped, reason)),
            Ok(Applied::NotLdapBacked { authsource }) => Ok(switched_meanwhile(&authsource)),
            Err(e) => refused(e),
        }
    }
}

/// A mailbox listed as LDAP-backed that has another authsource by the time its row is locked.
fn switched_meanwhile(authsource: &str) -> Outcome {
    Outcome::info(
        Kind::Skipped,
        format!("authsource is {authsource} now: template not applied"),
    )
}

/// A policy refusal, or broken data in one row, fails this entry only; any other database
/// error ends the run.
fn refused(e: ProvisionError) -> Result<Outcome, SyncError> {
    match e {
        ProvisionError::Refused(why) | ProvisionError::Store(StoreError::Data(why)) => {
            Ok(Outcome::warn(Kind::Failed, why))
        }
        ProvisionError::Store(e) => Err(SyncError::Store(e)),
    }
}
