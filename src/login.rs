//! The login flow, written once for every front end (checkpassword, the `login` command, …):
//! mailbox lookup → access checks → app password → LDAP search + bind → mapping →
//! provision/update → answer → `sasl_log`.

use crate::config::{Config, ConfigError};
use crate::connections::{AfterBind, Connections, Fresh};
use crate::deadline::Deadline;
use crate::ldap::{DirectoryError, InvalidCredentials, UserSearch};
use crate::mailcow::address::{self, AddressError};
use crate::mailcow::provision::{self, Applied, Preview, ProvisionError, Provisioned};
use crate::mailcow::store::{Store, TemplateRead};
use crate::mailcow::{AppPassword, LoginRead, Mailbox, StoreError, password_hash};
use crate::planner::{self, MailboxState, Plan, Policy};

pub struct LoginRequest<'a> {
    /// The login name as Dovecot passes it.
    pub username: &'a str,
    pub password: &'a str,
    /// Dovecot's `SERVICE` (imap, pop3, sieve, smtp, …), selecting mailcow's `<service>_access`.
    pub service: &'a str,
    /// The client's IP, when the front end knows it: a successful login then writes
    /// mailcow's `sasl_log` row (the UI's "last logins").
    pub remote_ip: Option<&'a str>,
}

/// What the login flow decided: accepted, or refused for a reason (faults are `LoginError`).
#[derive(Debug)]
pub enum Verdict {
    Accepted {
        mailbox: Box<Mailbox>,
        /// What happened on the way, for the log line ("ok", "mailbox created from …").
        note: String,
        /// The id of the app password that logged in (`None`: the LDAP password).
        app_password: Option<i64>,
    },
    Refused(Refusal),
}

/// Why a login is refused (exit 1). Each message is the reason logged.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("empty password")]
    EmptyPassword,
    #[error("password contains a NUL byte")]
    NulInPassword,
    #[error("login name or password is not UTF-8")]
    NotUtf8,
    #[error("malformed login name")]
    MalformedLogin,
    #[error("resource mailbox")]
    Resource,
    #[error("mailbox inactive")]
    MailboxInactive,
    #[error("domain inactive or missing")]
    DomainInactive,
    #[error("service {0} disabled for this mailbox")]
    ServiceDisabled(String),
    #[error("mailbox not LDAP-backed (authsource {0})")]
    NotLdapBacked(String),
    #[error("mailbox deleted during the login")]
    MailboxVanished,
    #[error("no such LDAP entry")]
    NoLdapEntry,
    #[error("ambiguous LDAP entry: {0} entries match")]
    Ambiguous(String),
    /// With the server's diagnostic text, if it gave one.
    #[error("wrong password{0}")]
    WrongPassword(String),
    #[error("no mailbox, and login_provisioning is off")]
    ProvisioningOff,
    #[error("no attribute mapping for {0} and no default_template")]
    NoMapping(String),
    #[error("{0}")]
    Provisioning(String),
    /// The mailbox's name would make a path of `dovecot.userdb_fields` unsafe.
    #[error("{0}")]
    UnsafeUserdbField(String),
}

/// Every fault on the way: a temporary failure (exit 111), never "wrong password".
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("deadline exceeded before {0}")]
    Deadline(&'static str),
    /// `serve`: no pooled connection came free in time.
    #[error(transparent)]
    Busy(#[from] crate::serve::pool::Exhausted),
}

/// A policy refusal of provisioning rejects the login; a database fault is temporary.
fn provisioning_failed(e: ProvisionError) -> Result<Verdict, LoginError> {
    match e {
        ProvisionError::Refused(why) => Ok(Verdict::Refused(Refusal::Provisioning(why))),
        ProvisionError::Store(e) => Err(LoginError::Store(e)),
    }
}

/// The address mailcow stores for this login name: trimmed, lower-cased, the domain in its
/// ASCII (IDNA) form; an error for anything that is not a mail address.
pub fn normalize_login(login: &str) -> Result<String, AddressError> {
    address::normalize(login).map(|a| a.username)
}

/// The log note of a provisioning step, with what was left out.
pub(crate) fn with_skipped(note: String, skipped: &[String]) -> String {
    if skipped.is_empty() {
        note
    } else {
        format!("{note}; skipped outside MySQL: {}", skipped.join(", "))
    }
}

/// mailcow's login checks, all answered from the database, so that a disabled protocol or
/// mailbox never causes an LDAP bind (which could lock an Active Directory account).
pub fn check_access(mailbox: &Mailbox, service: &str) -> Result<(), Refusal> {
    if mailbox.is_resource() {
        return Err(Refusal::Resource);
    }
    if mailbox.active != 1 {
        return Err(Refusal::MailboxInactive);
    }
    if mailbox.domain_active != Some(1) {
        return Err(Refusal::DomainInactive);
    }
    if !mailbox.service_allowed(service) {
        return Err(Refusal::ServiceDisabled(service.to_ascii_lowercase()));
    }
    Ok(())
}

/// Whether a login provisions, or only says what it finds and would write (`login --dry-run`).
enum Mode {
    Write,
    /// The steps so far, in order; nothing is written (no mailbox, no `sasl_log`, no Redis).
    DryRun(Vec<String>),
}

impl Mode {
    fn dry(&self) -> bool {
        matches!(self, Mode::DryRun(_))
    }

    /// Records a step of a dry run (computed only then).
    fn step(&mut self, text: impl FnOnce() -> String) {
        if let Mode::DryRun(steps) = self {
            steps.push(text());
        }
    }

    fn into_steps(self) -> Vec<String> {
        match self {
            Mode::Write => Vec::new(),
            Mode::DryRun(steps) => steps,
        }
    }

    /// Records lines a preview produced (what would be written).
    fn steps(&mut self, lines: Vec<String>) {
        if let Mode::DryRun(steps) = self {
            steps.extend(lines);
        }
    }
}

/// The whole login on connections of its own, writing nothing: the outcome it would have
/// and the steps it took (what it found, what provisioning would write, the limits checked).
pub fn dry_run(
    config: &Config,
    request: &LoginRequest,
    deadline: &Deadline,
) -> (Result<Verdict, LoginError>, Vec<String>) {
    let mut mode = Mode::DryRun(Vec::new());
    let outcome = login(
        &mut Fresh::new(config),
        config,
        request,
        deadline,
        &mut mode,
    );
    (outcome, mode.into_steps())
}

/// [`authenticate_with`] on connections of its own.
pub fn authenticate(
    config: &Config,
    request: &LoginRequest,
    deadline: &Deadline,
) -> Result<Verdict, LoginError> {
    authenticate_with(&mut Fresh::new(config), config, request, deadline)
}

pub fn authenticate_with(
    connections: &mut dyn Connections,
    config: &Config,
    request: &LoginRequest,
    deadline: &Deadline,
) -> Result<Verdict, LoginError> {
    let outcome = login(connections, config, request, deadline, &mut Mode::Write)?;
    Ok(record_sasl_log(
        connections,
        config,
        request,
        outcome,
        deadline,
    ))
}

/// The login's checks and decision, for both modes.
fn login(
    connections: &mut dyn Connections,
    config: &Config,
    request: &LoginRequest,
    deadline: &Deadline,
    mode: &mut Mode,
) -> Result<Verdict, LoginError> {
    let refused = |refusal| Ok(Verdict::Refused(refusal));
    // An empty simple bind is an unauthenticated bind, which Active Directory accepts.
    if request.password.is_empty() {
        return refused(Refusal::EmptyPassword);
    }
    if request.password.contains('\0') {
        return refused(Refusal::NulInPassword);
    }
    let Ok(username) = normalize_login(request.username) else {
        return refused(Refusal::MalformedLogin);
    };
    mode.step(|| format!("login name {username}, service {}", request.service));
    decide(connections, config, request, &username, deadline, mode)
}

/// The login's decision on a normalised address.
fn decide(
    connections: &mut dyn Connections,
    config: &Config,
    request: &LoginRequest,
    username: &str,
    deadline: &Deadline,
    mode: &mut Mode,
) -> Result<Verdict, LoginError> {
    let refused = |refusal| Ok(Verdict::Refused(refusal));
    let idp = config.reads_mailcow_settings();
    let mut first = connections.first_read(username, idp, true, deadline)?;
    let mut before = before_ldap(&first.read, request);
    // A remembered row only ever sends a login on to LDAP (serve::remembered).
    if first.remembered && !matches!(before, BeforeLdap::Ldap) {
        first = connections.first_read(username, idp, false, deadline)?;
        before = before_ldap(&first.read, request);
    }
    let remembered = first.remembered;
    let LoginRead {
        mailbox: existing,
        app_passwords,
        identity_provider,
    } = first.read;
    mode.step(|| match &existing {
        Some(m) => format!(
            "mailbox {}: active {}, authsource {}, quota {} MiB, {} app password(s)",
            m.username,
            m.active,
            m.authsource.as_deref().unwrap_or("mailcow"),
            m.quota >> 20,
            app_passwords.len()
        ),
        None => format!("no mailbox {username}"),
    });
    if let BeforeLdap::Decided(verdict) = before {
        return Ok(verdict);
    }
    if existing.is_some() {
        mode.step(|| "mailbox checks passed (active, domain, service, LDAP-backed)".into());
        mode.step(|| "no app password matches: the LDAP password decides".into());
    }

    // ldap.from_mailcow, read per login: this login's LDAP settings and mapping, as mailcow's
    // UI stores them (only now: a refusal above, or an app password, needs none of them). The
    // caller's directory connections belong to the file's settings, so these logins connect
    // afresh. (`serve` completes its configuration from the table beforehand: none read here.)
    let from_mailcow;
    let mut own_directory;
    let (config, directory): (&Config, &mut dyn Connections) = match &identity_provider {
        Some(rows) => {
            mode.step(|| "LDAP settings from mailcow's identity_provider".into());
            from_mailcow = config.with_mailcow_settings(rows)?;
            own_directory = Fresh::new(&from_mailcow);
            (&from_mailcow, &mut own_directory)
        }
        None => (config, &mut *connections),
    };
    let ldap_says = match directory.find_login(request.username, username, deadline)? {
        UserSearch::Found(entry) => {
            match directory.check_password(&entry.dn, request.password, deadline)? {
                Ok(()) => Ok(entry),
                Err(InvalidCredentials(detail)) => Err(Refusal::WrongPassword(server_says(detail))),
            }
        }
        UserSearch::NotFound => Err(Refusal::NoLdapEntry),
        UserSearch::Ambiguous(count) => Err(Refusal::Ambiguous(count)),
    };
    let entry = match ldap_says {
        Ok(entry) => entry,
        Err(refusal) => {
            return refused_by_ldap(directory, remembered, username, request, deadline, refusal);
        }
    };
    mode.step(|| {
        format!(
            "LDAP entry {}: the password binds; mapping values {}",
            entry.dn,
            describe_values(&entry.mapping_values)
        )
    });
    directory.directory_done();

    let name = entry.display_name.as_deref();
    let plan =
        Policy::login(config).plan(MailboxState::of(existing.as_ref()), &entry.mapping_values);
    mode.step(|| format!("plan: {plan}"));
    // `note` says what provisioning did, for the log line; `None` when it did nothing.
    let (mailbox, note) = match plan {
        Plan::Blocked(planner::Blocker::CreationOff) => return refused(Refusal::ProvisioningOff),
        Plan::Blocked(planner::Blocker::NoMapping) => {
            return refused(Refusal::NoMapping(describe_values(&entry.mapping_values)));
        }
        Plan::Blocked(planner::Blocker::NotLdapBacked(authsource)) => {
            return refused(Refusal::NotLdapBacked(authsource));
        }
        Plan::Keep | Plan::Reapply(_) => {
            let template = match plan {
                Plan::Reapply(template) => Some(template),
                _ => None,
            };
            // Read again after the LDAP round trips (with the mapped template, in the same
            // round trip): an admin may have deactivated the mailbox or switched its
            // authsource meanwhile.
            let mut after = connections.after_bind(username, template, true, deadline)?;
            // A reused read only ever accepts a login that writes nothing: a refusal, or a
            // template to re-apply, is decided on a fresh read (serve::unchanged).
            if after
                .as_ref()
                .is_some_and(|read| read.reused && !accepts_as_it_is(read, request.service, name))
            {
                after = connections.after_bind(username, template, false, deadline)?;
            }
            let Some(AfterBind {
                mailbox,
                template: loaded,
                ..
            }) = after
            else {
                return refused(Refusal::MailboxVanished);
            };
            if let Err(refusal) = check_access(&mailbox, request.service).and(ldap_backed(&mailbox))
            {
                return refused(refusal);
            }
            match (template, loaded) {
                (Some(template), Some(loaded))
                    if !provision::template_unchanged(&mailbox, name, &loaded) =>
                {
                    let store = connections.store(deadline)?;
                    match apply_template(store, &mailbox, name, template, loaded, mode) {
                        Ok(Applied::Unchanged) => (mailbox, None),
                        Ok(Applied::ReappliedMeanwhile { mailbox }) => (*mailbox, None),
                        Ok(Applied::Reapplied { mailbox, skipped }) => (
                            *mailbox,
                            Some(with_skipped(
                                format!("template {template} re-applied"),
                                &skipped,
                            )),
                        ),
                        // mailcow lets the login succeed when the update cannot be made; the
                        // access checks below still obey the template (`mailbox` is as it
                        // would leave it).
                        Ok(Applied::Skipped { reason, mailbox }) => (*mailbox, Some(reason)),
                        // Switched while this login waited for the row lock.
                        Ok(Applied::NotLdapBacked { authsource }) => {
                            return refused(Refusal::NotLdapBacked(authsource));
                        }
                        Err(e) => return provisioning_failed(e),
                    }
                }
                _ => (mailbox, None),
            }
        }
        Plan::Create(template) => {
            let store = connections.store(deadline)?;
            match create(store, username, name, template, mode) {
                Ok(done) if done.created => {
                    let note = format!("mailbox created from template {template}");
                    (done.mailbox, Some(with_skipped(note, &done.skipped)))
                }
                // Another login created it meanwhile: answer as for an existing mailbox.
                Ok(done) => {
                    if let Err(refusal) = ldap_backed(&done.mailbox) {
                        return refused(refusal);
                    }
                    let note = "mailbox created by a concurrent login".to_owned();
                    (done.mailbox, Some(note))
                }
                Err(e) => return provisioning_failed(e),
            }
        }
    };
    mode.step(|| {
        let done = note.as_deref().unwrap_or("nothing to write");
        format!("provisioning: {done}")
    });
    // Provisioning may have written an inactive mailbox or a disabled protocol.
    match (check_access(&mailbox, request.service), note) {
        (Ok(()), note) => Ok(Verdict::Accepted {
            mailbox: Box::new(mailbox),
            note: note.unwrap_or_else(|| "ok".to_owned()),
            app_password: None,
        }),
        (Err(refusal), None) => refused(refusal),
        (Err(refusal), Some(note)) => refused(Refusal::Provisioning(format!("{refusal}; {note}"))),
    }
}

/// [`provision::create`], or in a dry run its preview (the rows go to the steps).
fn create(
    store: &mut Store,
    username: &str,
    name: Option<&str>,
    template: &str,
    mode: &mut Mode,
) -> Result<Provisioned, ProvisionError> {
    if !mode.dry() {
        return provision::create(store, username, name, template);
    }
    let loaded = provision::template_for_creation(store, template)?;
    match provision::preview_create(store, username, name, template, loaded.as_ref())? {
        Preview::Write { rows, mailbox } => {
            mode.steps(rows);
            Ok(Provisioned {
                mailbox: *mailbox,
                created: true,
                skipped: Vec::new(),
            })
        }
        _ => Err(ProvisionError::Refused(
            "another login created the mailbox meanwhile".into(),
        )),
    }
}

/// [`provision::apply_template`], or in a dry run its preview (the rows go to the steps).
fn apply_template(
    store: &mut Store,
    mailbox: &Mailbox,
    name: Option<&str>,
    template: &str,
    loaded: TemplateRead,
    mode: &mut Mode,
) -> Result<Applied, ProvisionError> {
    if !mode.dry() {
        return provision::apply_template(store, mailbox, name, template, loaded);
    }
    Ok(
        match provision::preview_template(store, mailbox, name, template, loaded)? {
            Preview::Write { rows, mailbox } => {
                mode.steps(rows);
                Applied::Reapplied {
                    mailbox,
                    skipped: Vec::new(),
                }
            }
            Preview::Nothing => Applied::Unchanged,
            Preview::Skipped { reason, mailbox } => Applied::Skipped { reason, mailbox },
            Preview::NotLdapBacked(authsource) => Applied::NotLdapBacked { authsource },
        },
    )
}

/// Whether the read after the bind accepts the login with nothing to write: the access checks
/// pass and the mapped template (if any) is applied already.
fn accepts_as_it_is(read: &AfterBind, service: &str, display_name: Option<&str>) -> bool {
    check_access(&read.mailbox, service)
        .and(ldap_backed(&read.mailbox))
        .is_ok()
        && read
            .template
            .as_ref()
            .is_none_or(|loaded| provision::template_unchanged(&read.mailbox, display_name, loaded))
}

/// A refusal on LDAP's word (no entry, ambiguous, wrong password). After a remembered row it
/// is decided on a fresh one instead: an app password added since, or a mailbox deactivated
/// since, answers first. The LDAP connections go back before the database read (the pools'
/// order: database, then directory).
fn refused_by_ldap(
    directory: &mut dyn Connections,
    remembered: bool,
    username: &str,
    request: &LoginRequest,
    deadline: &Deadline,
    refusal: Refusal,
) -> Result<Verdict, LoginError> {
    if remembered {
        directory.directory_done();
        let fresh = directory.first_read(username, false, false, deadline)?;
        if let BeforeLdap::Decided(verdict) = before_ldap(&fresh.read, request) {
            return Ok(verdict);
        }
    }
    Ok(Verdict::Refused(refusal))
}

/// What the rows read before any LDAP traffic decide.
enum BeforeLdap {
    /// A refusal, or an app password that matches.
    Decided(Verdict),
    /// The LDAP password decides (also: no mailbox yet).
    Ldap,
}

/// mailcow's checks on the mailbox, then its app passwords: mailcow's order, so a client set
/// up with an app password never causes an LDAP bind (nor an Active Directory lockout once
/// the LDAP password changed), and a disabled mailbox or protocol never causes one either.
fn before_ldap(read: &LoginRead, request: &LoginRequest) -> BeforeLdap {
    let Some(mailbox) = &read.mailbox else {
        return BeforeLdap::Ldap;
    };
    if let Err(refusal) = check_access(mailbox, request.service).and(ldap_backed(mailbox)) {
        return BeforeLdap::Decided(Verdict::Refused(refusal));
    }
    match matching_app_password(&read.app_passwords, request) {
        Some(id) => BeforeLdap::Decided(Verdict::Accepted {
            mailbox: Box::new(mailbox.clone()),
            note: format!("app password {id}"),
            app_password: Some(id),
        }),
        None => BeforeLdap::Ldap,
    }
}

/// The id of the first app password (lowest id, as mailcow) that may be used for this service
/// and matches the password.
fn matching_app_password(app_passwords: &[AppPassword], request: &LoginRequest) -> Option<i64> {
    app_passwords
        .iter()
        .filter(|a| a.allows(request.service))
        .find(|a| password_hash::verify(&a.hash, request.password))
        .map(|a| a.id)
}

/// mailcow's `set_sasl_log()` for an accepted login whose client IP is known. A failure to
/// write the row never fails the login: it is added to the log line.
fn record_sasl_log(
    connections: &mut dyn Connections,
    config: &Config,
    request: &LoginRequest,
    mut outcome: Verdict,
    deadline: &Deadline,
) -> Verdict {
    let (Some(remote_ip), true) = (request.remote_ip, config.log.sasl_log) else {
        return outcome;
    };
    if let Verdict::Accepted {
        mailbox,
        note,
        app_password,
    } = &mut outcome
    {
        let id = app_password.unwrap_or(0);
        let written = connections.store(deadline).and_then(|store| {
            Ok(store.write_sasl_log(&mailbox.username, remote_ip, request.service, id)?)
        });
        if let Err(e) = written {
            note.push_str(&format!("; sasl_log not written: {e}"));
        }
    }
    outcome
}

/// `" (server: …)"` for a diagnostic text, or nothing.
fn server_says(detail: String) -> String {
    let detail = detail.trim();
    if detail.is_empty() {
        String::new()
    } else {
        format!(" (server: {detail})")
    }
}

/// Mailboxes of another authsource (NULL means mailcow) check their password elsewhere.
fn ldap_backed(mailbox: &Mailbox) -> Result<(), Refusal> {
    planner::ldap_backed(MailboxState::of(Some(mailbox))).map_err(Refusal::NotLdapBacked)
}

pub(crate) fn describe_values(values: &[String]) -> String {
    if values.is_empty() {
        "an entry without the attribute".to_owned()
    } else {
        values
            .iter()
            .map(|v| format!("'{v}'"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Lookup mode (userdb): the mailbox as Dovecot may deliver to it, without contacting LDAP.
/// Active 1 and 2 ("no login, mail still accepted") both count, and resource mailboxes too,
/// like mailcow's SQL userdb.
pub fn lookup(
    connections: &mut dyn Connections,
    username: &str,
    deadline: &Deadline,
) -> Result<Option<Mailbox>, LoginError> {
    let Ok(username) = normalize_login(username) else {
        return Ok(None);
    };
    // Resource mailboxes (rooms, equipment) receive mail too; their logins stay refused.
    Ok(connections
        .store(deadline)?
        .mailbox(&username)?
        .filter(|m| m.active == 1 || m.active == 2))
}
