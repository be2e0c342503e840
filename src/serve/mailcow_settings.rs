//! `serve` with `ldap.from_mailcow`: mailcow's LDAP settings are read at start, every
//! `serve.mailcow_settings_refresh_s` and on SIGHUP — not per login, so that logins run on the
//! pooled connections of those settings. A reading that fails (database down) or gives settings
//! that cannot be used (the provider removed, a bad value) keeps the last good ones. Until a
//! first good reading, logins read the table per login as the other front ends do (each one that
//! needs LDAP is then a temporary failure naming the configuration error).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::config::{Config, IdpRows, same_connections};
use crate::connections::connect_store;
use crate::deadline::Deadline;
use crate::log::{Logger, Severity};

/// Where a generation's configuration came from.
pub struct MailcowSettings {
    /// The file's configuration (placeholders where mailcow's settings go).
    pub file: Arc<Config>,
    /// The rows the generation's configuration was completed with; `None`: no usable reading
    /// yet, logins read the table per login.
    pub rows: Option<Arc<IdpRows>>,
}

/// How the last reading went, for the log and `/metrics`.
#[derive(Default)]
pub struct SettingsStatus {
    reading: Mutex<Reading>,
}

#[derive(Default)]
struct Reading {
    /// When the table was last read with usable settings.
    loaded_at: Option<SystemTime>,
    /// Why the last reading failed: logged once, until it changes or a reading succeeds.
    problem: Option<String>,
}

impl SettingsStatus {
    fn reading(&self) -> MutexGuard<'_, Reading> {
        self.reading.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn succeeded(&self, logger: &Logger) {
        let mut reading = self.reading();
        reading.loaded_at = Some(SystemTime::now());
        if reading.problem.take().is_some() {
            logger.log(Severity::Info, "serve: mailcow's LDAP settings read again");
        }
    }

    fn failed(&self, logger: &Logger, problem: String, kept: bool) {
        let mut reading = self.reading();
        if reading.problem.as_ref() == Some(&problem) {
            return;
        }
        let then = if kept {
            "keeping the last good ones"
        } else {
            "logins read them per login until a reading succeeds"
        };
        logger.log(
            Severity::Error,
            &format!("serve: reading mailcow's LDAP settings failed: {problem}; {then}"),
        );
        reading.problem = Some(problem);
    }

    /// When the settings were last read and usable (`None`: never).
    pub fn loaded_at(&self) -> Option<SystemTime> {
        self.reading().loaded_at
    }

    /// Whether the last reading failed.
    pub fn failing(&self) -> bool {
        self.reading().problem.is_some()
    }
}

/// mailcow's settings as the table holds them now, completed on `file`, on a database
/// connection of its own; a failure is noted in `status` (`kept`: last good settings remain).
fn read(
    file: &Config,
    status: &SettingsStatus,
    logger: &Logger,
    kept: bool,
) -> Option<(Config, IdpRows)> {
    let deadline = Deadline::after(file.deadline);
    let reading = connect_store(file, &deadline)
        .and_then(|mut store| Ok(store.identity_provider()?))
        .map_err(|e| e.to_string())
        .and_then(|rows| match file.with_mailcow_settings(&rows) {
            Ok(config) => Ok((config, rows)),
            Err(e) => Err(e.to_string()),
        });
    match reading {
        Ok(settings) => {
            status.succeeded(logger);
            Some(settings)
        }
        Err(problem) => {
            status.failed(logger, problem, kept);
            None
        }
    }
}

/// Logs the warnings that mailcow's settings added to the file's (e.g. a CA file without TLS).
fn log_added_warnings(completed: &Config, file: &Config, logger: &Logger) {
    for warning in &completed.warnings {
        if !file.warnings.contains(warning) {
            logger.log(Severity::Warning, warning);
        }
    }
}

/// The configuration a new generation runs with (start, SIGHUP): `file` completed from the
/// table as it is now, else from `last` (the last good rows), else `file` itself.
pub fn settle(
    file: Config,
    last: Option<&Arc<IdpRows>>,
    status: &SettingsStatus,
    logger: &Logger,
) -> (Config, Option<MailcowSettings>) {
    if !file.reads_mailcow_settings() {
        return (file, None);
    }
    // The last good rows on this (perhaps changed) file, should the table be unusable.
    let kept = last.and_then(|rows| Some((file.with_mailcow_settings(rows).ok()?, rows.clone())));
    let (config, rows) = match read(&file, status, logger, kept.is_some()) {
        Some((config, rows)) => {
            log_added_warnings(&config, &file, logger);
            (config, Some(Arc::new(rows)))
        }
        None => match kept {
            Some((config, rows)) => (config, Some(rows)),
            None => (file.clone(), None),
        },
    };
    let settings = MailcowSettings {
        file: Arc::new(file),
        rows,
    };
    (config, Some(settings))
}

/// What a periodic reading found changed.
pub struct Changed {
    pub config: Config,
    pub settings: MailcowSettings,
    /// Only the mapping changed: the pooled connections stay good.
    pub same_connections: bool,
}

/// The table read again: `None` when it is unchanged or unusable (the running settings stay).
pub fn reread(
    running: &MailcowSettings,
    status: &SettingsStatus,
    logger: &Logger,
) -> Option<Changed> {
    let (config, rows) = read(&running.file, status, logger, running.rows.is_some())?;
    if running.rows.as_deref() == Some(&rows) {
        return None;
    }
    log_added_warnings(&config, &running.file, logger);
    Some(Changed {
        config,
        same_connections: running
            .rows
            .as_deref()
            .is_some_and(|last| same_connections(last, &rows)),
        settings: MailcowSettings {
            file: running.file.clone(),
            rows: Some(Arc::new(rows)),
        },
    })
}
