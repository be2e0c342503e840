//! `sync`: import LDAP users as mailboxes and re-apply changed templates to existing ones, for
//! cron or a systemd timer — mailcow's `ldap-sync.php` semantics without its bugs.
//!
//! One run: lock → interval check → service bind + paged listing, taken in chunks as it
//! arrives: per chunk, the mailbox rows of its addresses read, each entry planned (the same
//! planner as a login) and the creations and re-applications written in batches per domain
//! (the same checks and rows as a login's) → optionally, LDAP-backed mailboxes missing from the
//! complete listing deactivated → summary line → time of the run recorded. Memory is bounded
//! by a chunk (`chunk.rs`), not by the directory.
//!
//! Differences from mailcow: users without the attribute field are seen too (they get the
//! default template on import); the address is normalised like a login (case, IDN); an address
//! carried by several entries is not written from each in turn (flip-flopping); nothing is
//! logged for entries that need nothing; a failed run does not count for the interval.

mod chunk;
mod deactivate;
mod progress;
mod report;
pub(crate) mod state;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, StderrLevel};
use crate::deadline::Deadline;
use crate::ldap::{self, DirectoryError, ListedUser, UserEntry};
use crate::log::{Logger, Severity, printable, printable_word};
use crate::login::{describe_values, with_skipped};
use crate::mailcow::address;
use crate::mailcow::provision::batch::{self, Done, Item, Mode};
use crate::mailcow::provision::up_to_date;
use crate::mailcow::template::Template;
use crate::mailcow::{SettingsError, Store, StoreError, effective_config};
use crate::planner::{Blocker, MailboxState, Plan, Policy};
use chunk::{Chunk, Entry, Row, Rows};
use progress::Progress;
use report::{Counts, JsonSummary, Kind, Outcome};
use state::StateDir;

/// Where the lock and the time of the last completed run live unless `--state-dir` says.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mailcow-ldap-auth";

/// Mailboxes per transaction: the domain row stays locked for one batch (logins of the domain
/// that create or update a mailbox wait that long), and a batch costs one commit.
pub(crate) const BATCH_SIZE: usize = 200;

pub(crate) struct Options {
    /// Report what would be written; write nothing (no lock, no state, no database writes).
    pub dry_run: bool,
    /// Run even when `sync.interval_minutes` have not passed since the last completed run.
    pub force: bool,
    pub state_dir: PathBuf,
    /// Print the summary as one JSON object on standard output.
    pub json: bool,
}

/// A fault that ends the run: exit 111, the time of the run not recorded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// Where the lines of a run go: the log (syslog + stderr per config), or for a dry run
/// standard output only (it changes nothing, so it leaves no trace in the mail log; standard
/// error under `--json`, which keeps standard output for the summary).
enum Sink<'a> {
    Log(&'a Logger),
    DryRun { to_stderr: bool },
}

struct Output<'a> {
    sink: Sink<'a>,
    progress: &'a Progress,
}

impl Output<'_> {
    fn line(&self, severity: Severity, text: &str) {
        self.progress.clear();
        match self.sink {
            Sink::Log(logger) => logger.log(severity, &format!("sync {text}")),
            Sink::DryRun { to_stderr: true } => eprintln!("sync dry-run {text}"),
            Sink::DryRun { to_stderr: false } => println!("sync dry-run {text}"),
        }
    }

    /// The line of one entry's outcome, if it deserves one.
    fn entry(&self, who: &str, outcome: &Outcome) {
        if let Some(note) = &outcome.note {
            let (severity, reason) = &**note;
            self.line(
                *severity,
                &format!(
                    "{who} result={} reason=\"{}\"",
                    outcome.kind.word(),
                    printable(reason)
                ),
            );
        }
    }

    fn dry_run(&self) -> bool {
        matches!(self.sink, Sink::DryRun { .. })
    }
}

/// How a run ended, for the exit code, the summary line and `--json`.
enum Ending {
    Done(Counts),
    Fault(String),
    /// Not run (off, not due or busy), with the line for a terminal.
    NotRun(SyncResult, String),
}

/// How `sync` ended; `exit.rs` maps it to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncResult {
    Completed,
    /// `sync.import_users` and `sync.periodic_full_sync` are both false.
    Off,
    /// The last run started less than `sync.interval_minutes` ago.
    NotDue,
    /// Another run holds the lock.
    Busy,
    Fault,
}

impl SyncResult {
    /// The `result` of the `--json` summary.
    fn word(self) -> &'static str {
        match self {
            SyncResult::Completed => "ok",
            SyncResult::Off => "off",
            SyncResult::NotDue => "not_due",
            SyncResult::Busy => "busy",
            SyncResult::Fault => "tempfail",
        }
    }
}

pub(crate) fn run(config_path: &Path, options: &Options) -> SyncResult {
    let started = Instant::now();
    let (ending, logger) = match Config::load(config_path) {
        Ok(config) => {
            let logger = Logger::new(&config.log);
            for warning in &config.warnings {
                logger.log(Severity::Warning, warning);
            }
            (
                run_loaded(&config, options, &logger),
                Some((logger, config)),
            )
        }
        Err(e) => (Ending::Fault(e.to_string()), None),
    };
    let ms = started.elapsed().as_millis();
    let stdout_tty = std::io::stdout().is_terminal();
    let (result, counts, reason) = match &ending {
        Ending::Done(counts) => {
            let summary = counts.summary(started);
            match &logger {
                Some(_) if options.dry_run && options.json => eprintln!("sync dry-run {summary}"),
                Some(_) if options.dry_run => println!("sync dry-run {summary}"),
                Some((logger, config)) => {
                    logger.log(Severity::Info, &format!("sync {summary}"));
                    if stdout_tty && !options.json && config.log.stderr != StderrLevel::All {
                        println!("sync {summary}");
                    }
                }
                None => {}
            }
            (SyncResult::Completed, Some(*counts), None)
        }
        Ending::Fault(why) => {
            let line = format!("result=tempfail reason=\"{}\" ms={ms}", printable(why));
            match &logger {
                Some(_) if options.dry_run => eprintln!("sync dry-run {line}"),
                Some((logger, _)) => logger.log(Severity::Error, &format!("sync {line}")),
                None => Logger::fallback().log(Severity::Error, &format!("sync {line}")),
            }
            (SyncResult::Fault, None, Some(why.clone()))
        }
        Ending::NotRun(result, line) => {
            if stdout_tty && !options.json && !line.is_empty() {
                println!("{line}");
            }
            (*result, None, None)
        }
    };
    if options.json {
        let summary = JsonSummary {
            result: result.word(),
            dry_run: options.dry_run,
            counts,
            reason,
            ms,
        };
        println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    }
    result
}

fn run_loaded(config: &Config, options: &Options, logger: &Logger) -> Ending {
    if !config.sync.import_users && !config.sync.periodic_full_sync {
        let line = "sync is off (sync.import_users and sync.periodic_full_sync are false)";
        // Said even without a terminal: someone ran it by hand and should know.
        if !options.json {
            println!("{line}");
        }
        return Ending::NotRun(SyncResult::Off, String::new());
    }
    let progress = Progress::new();
    if options.dry_run {
        let out = Output {
            sink: Sink::DryRun {
                to_stderr: options.json,
            },
            progress: &progress,
        };
        let result = synchronise(config, &out);
        progress.clear();
        return match result {
            Ok(counts) => Ending::Done(counts),
            Err(e) => Ending::Fault(e.to_string()),
        };
    }

    let state = match StateDir::open(&options.state_dir) {
        Ok(state) => state,
        Err(e) => return Ending::Fault(e.to_string()),
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
            return Ending::NotRun(SyncResult::Busy, String::new());
        }
        Err(e) => return Ending::Fault(e.to_string()),
    };
    let now = SystemTime::now();
    if !options.force {
        let interval = Duration::from_secs(config.sync.interval_minutes.saturating_mul(60));
        match state.last_run() {
            // Not due: silent, as timers start the command more often than runs are due.
            Ok(state::LastRun::At(last)) if !state::due(last, now, interval) => {
                let line = format!(
                    "sync not due: the last run started less than {} minutes ago \
                     (--force runs it now)",
                    config.sync.interval_minutes
                );
                return Ending::NotRun(SyncResult::NotDue, line);
            }
            Ok(state::LastRun::Unreadable(why)) => {
                logger.log(Severity::Warning, &format!("sync: {why}"))
            }
            Ok(_) => {}
            Err(e) => return Ending::Fault(e.to_string()),
        }
    }

    let out = Output {
        sink: Sink::Log(logger),
        progress: &progress,
    };
    let result = synchronise(config, &out);
    progress.clear();
    match result {
        // A run that cannot be recorded is repeated by the next timer: say so loudly.
        Ok(counts) => match state.record(now) {
            Ok(()) => Ending::Done(counts),
            Err(e) => Ending::Fault(e.to_string()),
        },
        Err(e) => Ending::Fault(e.to_string()),
    }
}

/// One pass over the directory, chunk by chunk. Per-entry refusals are counted and logged; a
/// directory or database fault ends the pass (every batch written so far was one complete
/// transaction). Deactivation only follows a complete listing.
fn synchronise(config: &Config, out: &Output) -> Result<Counts, SyncError> {
    let mut store = Store::connect(&config.database, config.database.timeout)?
        .with_redis(config.redis.as_ref());
    let config = &*effective_config(config, &mut store)?;
    let templates = Templates::load(&mut store, config)?;
    store.start_listing()?;

    let mut counts = Counts::default();
    let mut run = ChunkRun {
        policy: Policy::sync(config),
        writer: Writer {
            store: &mut store,
            templates: &templates,
            out,
            counts: &mut counts,
        },
    };
    let mut chunk = Chunk::default();
    let mut fault: Option<SyncError> = None;
    let deadline = Deadline::after(config.deadline);
    let mut session = ldap::connect(&config.ldap, &deadline)?;
    let field = &config.ldap.username_field;
    session.list_users(|user| {
        // After a fault nothing more is kept or written: the run fails once the listing ends.
        if fault.is_some() {
            return;
        }
        out.progress.listed();
        run.writer.counts.entries += 1;
        match address_of(&user, field) {
            Ok(address) => {
                let UserEntry {
                    dn,
                    mapping_values,
                    display_name,
                } = user.entry;
                let entry = Entry {
                    address,
                    dn,
                    mapping_values,
                    display_name,
                };
                if chunk.push(entry) {
                    fault = run.chunk(&mut chunk).err();
                }
            }
            Err(why) => {
                run.writer.counts.add(Kind::Skipped);
                let who = format!("dn=\"{}\"", printable(&user.entry.dn));
                out.entry(&who, &Outcome::warn(Kind::Skipped, why));
            }
        }
    })?;
    drop(session);
    if let Some(fault) = fault {
        return Err(fault);
    }
    run.chunk(&mut chunk)?;
    counts.deactivated = deactivate::run(config, &mut store, out)?;
    Ok(counts)
}

/// Plans and writes the chunks of one run.
struct ChunkRun<'a, 'c> {
    policy: Policy<'c>,
    writer: Writer<'a, 'c>,
}

impl ChunkRun<'_, '_> {
    /// Compares the entries of `chunk` with their mailbox rows and writes what they ask for.
    fn chunk(&mut self, chunk: &mut Chunk) -> Result<(), SyncError> {
        let entries = chunk.take();
        let addresses = chunk::addresses(&entries);
        let store = &mut *self.writer.store;
        let mut rows = Rows::default();
        rows.listed_before = store
            .list_chunk(chunk.number, &addresses)?
            .into_iter()
            .map(|a| a.to_lowercase())
            .collect();
        store.mailbox_digests_of(&addresses, |row| rows.add(row))?;

        let out = self.writer.out;
        let mut creates: Vec<Work> = Vec::new();
        let mut reapplies: Vec<Work> = Vec::new();
        for group in entries.chunk_by(|a, b| a.address == b.address) {
            let entry = &group[0];
            let address = entry.address.as_str();
            let who = || format!("user={}", printable_word(address));
            let reason = if group.len() > 1 {
                format!(
                    "ambiguous: {} LDAP entries carry this address (one: {}); all left out",
                    group.len(),
                    entry.dn
                )
            } else if rows.listed_before.contains(address) {
                format!(
                    "ambiguous: an entry listed earlier carries this address too; this one \
                     ({}) left out",
                    entry.dn
                )
            } else {
                match plan_entry(
                    &self.policy,
                    self.writer.templates,
                    entry,
                    rows.get(address),
                ) {
                    Listed::Settled(outcome) => {
                        self.writer.counts.add(outcome.kind);
                        out.entry(&who(), &outcome);
                    }
                    Listed::Create(work) => creates.push(work),
                    Listed::Reapply(work) => reapplies.push(work),
                }
                continue;
            };
            self.writer.counts.skipped += group.len() as u64;
            out.entry(&who(), &Outcome::warn(Kind::Skipped, reason));
        }
        self.writer.all(creates, Action::Create)?;
        self.writer.all(reapplies, Action::Reapply)
    }
}

/// What the listing asks for one entry.
enum Listed<'a> {
    Create(Work<'a>),
    Reapply(Work<'a>),
    /// Nothing to write: what to count (and log).
    Settled(Outcome),
}

/// What the listing asks for one entry, given its mailbox row.
fn plan_entry<'a>(
    policy: &Policy<'a>,
    templates: &Templates,
    entry: &'a Entry,
    row: Row,
) -> Listed<'a> {
    let values = &entry.mapping_values;
    let work = |template| Work {
        address: &entry.address,
        template,
        name: entry.display_name.as_deref(),
    };
    match row {
        Row::Unreadable(why) => Listed::Settled(Outcome::warn(Kind::Failed, why)),
        Row::Missing => match policy.plan(MailboxState::Missing, values) {
            Plan::Create(template) => Listed::Create(work(template)),
            Plan::Blocked(Blocker::NoMapping) => Listed::Settled(Outcome::warn(
                Kind::Skipped,
                format!(
                    "no attribute mapping for {} ({}) and no default_template",
                    entry.address,
                    describe_values(values)
                ),
            )),
            _ => Listed::Settled(Outcome::quiet(Kind::Skipped)),
        },
        Row::Stored {
            state, name, hash, ..
        } => match policy.plan(state, values) {
            Plan::Reapply(template) => match templates.get(template) {
                Err(why) => Listed::Settled(Outcome::warn(Kind::Failed, why.to_owned())),
                Ok(Some(t))
                    if up_to_date(&t.hash, entry.display_name.as_deref(), hash, |n| n == name) =>
                {
                    Listed::Settled(Outcome::quiet(Kind::Unchanged))
                }
                Ok(_) => Listed::Reapply(work(template)),
            },
            // Other authsources and resources are never touched; without a mapped template
            // (or with periodic_full_sync off) the mailbox stays as it is.
            _ => Listed::Settled(Outcome::quiet(Kind::Skipped)),
        },
    }
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

/// A template with its `attribute_hash`, computed once per run.
struct Loaded {
    template: Template,
    hash: String,
}

/// The templates the configuration names, each loaded once per run (a run applies one
/// template to many mailboxes).
struct Templates {
    /// `Err`: the stored template is broken (its message); every mailbox using it fails.
    loaded: HashMap<String, Result<Option<Loaded>, String>>,
}

impl Templates {
    fn load(store: &mut Store, config: &Config) -> Result<Templates, StoreError> {
        let names = config
            .attribute_mapping
            .iter()
            .map(|m| &m.template)
            .chain(&config.default_template);
        let mut loaded = HashMap::new();
        for name in names {
            let template = match store.template(name) {
                Ok(t) => Ok(t.map(|template| Loaded {
                    hash: template.attribute_hash().to_owned(),
                    template,
                })),
                Err(StoreError::Data(why)) => Err(why),
                Err(e) => return Err(e),
            };
            loaded.insert(name.clone(), template);
        }
        Ok(Templates { loaded })
    }

    fn get(&self, name: &str) -> Result<Option<&Loaded>, &str> {
        match self.loaded.get(name) {
            Some(Ok(t)) => Ok(t.as_ref()),
            Some(Err(why)) => Err(why),
            None => Ok(None),
        }
    }
}

/// One mailbox to create or re-apply.
struct Work<'a> {
    address: &'a str,
    template: &'a str,
    name: Option<&'a str>,
}

impl Work<'_> {
    fn domain(&self) -> &str {
        self.address.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Reapply,
}

/// Writes the planned work in batches of one domain, counting and logging each mailbox.
struct Writer<'a, 'c> {
    store: &'a mut Store,
    templates: &'a Templates,
    out: &'a Output<'c>,
    counts: &'a mut Counts,
}

impl Writer<'_, '_> {
    fn all(&mut self, mut work: Vec<Work>, action: Action) -> Result<(), SyncError> {
        work.sort_unstable_by(|a, b| (a.domain(), a.address).cmp(&(b.domain(), b.address)));
        for domain in work.chunk_by(|a, b| a.domain() == b.domain()) {
            for batch in domain.chunks(BATCH_SIZE) {
                self.batch(batch, action)?;
            }
        }
        Ok(())
    }

    fn batch(&mut self, work: &[Work], action: Action) -> Result<(), SyncError> {
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(work.len());
        let mut items: Vec<Item> = Vec::with_capacity(work.len());
        for w in work {
            match self.templates.get(w.template) {
                Err(why) => outcomes.push(Some(Outcome::warn(Kind::Failed, why.to_owned()))),
                Ok(loaded) => {
                    outcomes.push(None);
                    items.push(Item {
                        username: w.address,
                        display_name: w.name,
                        template_name: w.template,
                        template: loaded.map(|l| &l.template),
                    });
                }
            }
        }
        let domain = work.first().map_or("", Work::domain);
        let mode = if self.out.dry_run() {
            Mode::Preview
        } else {
            Mode::Write
        };
        let done = match action {
            Action::Create => batch::create(self.store, domain, &items, mode)?,
            Action::Reapply => batch::apply(self.store, domain, &items, mode)?,
        };
        let mut done = items
            .iter()
            .zip(done)
            .map(|(item, done)| outcome(item, done, action, mode));
        let (mut created, mut reapplied) = (0, 0);
        for (w, slot) in work.iter().zip(outcomes) {
            let Some(outcome) = slot.or_else(|| done.next()) else {
                continue;
            };
            created += u64::from(outcome.kind == Kind::Created);
            reapplied += u64::from(outcome.kind == Kind::Reapplied);
            self.counts.add(outcome.kind);
            self.out
                .entry(&format!("user={}", printable_word(w.address)), &outcome);
        }
        self.out.progress.wrote(created, reapplied);
        Ok(())
    }
}

/// The outcome of one mailbox of a batch (written, or previewed by `--dry-run`).
fn outcome(item: &Item, done: Done, action: Action, mode: Mode) -> Outcome {
    let template = item.template_name;
    match (done, action) {
        (Done::Written { .. }, Action::Create) if mode == Mode::Preview => Outcome::info(
            Kind::Created,
            format!("would create the mailbox from template {template}"),
        ),
        (Done::Written { .. }, Action::Reapply) if mode == Mode::Preview => Outcome::info(
            Kind::Reapplied,
            format!("would re-apply template {template}"),
        ),
        (Done::Written { skipped }, Action::Create) => Outcome::info(
            Kind::Created,
            with_skipped(
                format!("mailbox created from template {template}"),
                &skipped,
            ),
        ),
        (Done::Written { skipped }, Action::Reapply) => Outcome::info(
            Kind::Reapplied,
            with_skipped(format!("template {template} re-applied"), &skipped),
        ),
        (Done::Nothing, Action::Create) => Outcome::info(
            Kind::Unchanged,
            "mailbox created meanwhile by a login".into(),
        ),
        (Done::Nothing, Action::Reapply) => Outcome::quiet(Kind::Unchanged),
        (Done::NotLdapBacked(authsource), _) => switched_meanwhile(&authsource),
        // A refused creation fails the entry; a refused update is skipped (the mailbox stays
        // as it is, as for a login).
        (Done::Refused(why), Action::Create) => Outcome::warn(Kind::Failed, why),
        (Done::Refused(why), Action::Reapply) => Outcome::warn(Kind::Skipped, why),
        (Done::Failed(why), _) => Outcome::warn(Kind::Failed, why),
    }
}

/// A mailbox listed as LDAP-backed that has another authsource by the time its row is locked.
fn switched_meanwhile(authsource: &str) -> Outcome {
    Outcome::info(
        Kind::Skipped,
        format!("authsource is {authsource} now: template not applied"),
    )
}
