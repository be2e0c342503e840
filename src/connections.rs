//! Where the login flow gets its connections from: the seam between [`crate::login`] and its
//! callers. The per-login front ends connect afresh ([`Fresh`]); `serve` lends pooled ones
//! (`crate::serve::pool`). The flow itself is the same either way.

use crate::config::Config;
use crate::deadline::Deadline;
use crate::ldap::{self, DirectoryError, InvalidCredentials, Session, UserSearch};
use crate::login::LoginError;
use crate::mailcow::{LoginRead, Mailbox, Store, StoreError, TemplateRead};

/// What a login reads before it contacts LDAP.
pub struct FirstRead {
    pub read: LoginRead,
    /// A row an earlier login read moments ago (`serve`), not one read for this login.
    pub remembered: bool,
}

/// What a login reads after its LDAP bind: the mailbox and, when the mapping names a template,
/// that template as read (one round trip).
pub struct AfterBind {
    pub mailbox: Mailbox,
    pub template: Option<TemplateRead>,
    /// Taken from a login moments ago (`serve`), not read for this one.
    pub reused: bool,
}

/// The read after the bind in the database; `None`: the mailbox is gone.
pub fn read_after_bind(
    store: &mut Store,
    username: &str,
    template: Option<&str>,
) -> Result<Option<AfterBind>, StoreError> {
    Ok(match template {
        Some(template) => {
            store
                .mailbox_with_template(username, template)?
                .map(|(mailbox, loaded)| AfterBind {
                    mailbox,
                    template: Some(loaded),
                    reused: false,
                })
        }
        None => store.mailbox(username)?.map(|mailbox| AfterBind {
            mailbox,
            template: None,
            reused: false,
        }),
    })
}

/// The database and directory connections of one login or lookup.
pub trait Connections {
    /// The database connection, opened on first use and kept for the rest of the request.
    fn store(&mut self, deadline: &Deadline) -> Result<&mut Store, LoginError>;

    /// The mailbox, its app passwords and, with `identity_provider`, mailcow's settings (see
    /// [`Store::login_read`]). With `may_remember`, `serve` may answer with a row remembered
    /// from a login moments ago (`crate::serve::remembered`); the per-login front ends always
    /// read.
    fn first_read(
        &mut self,
        username: &str,
        identity_provider: bool,
        _may_remember: bool,
        deadline: &Deadline,
    ) -> Result<FirstRead, LoginError> {
        Ok(FirstRead {
            read: self
                .store(deadline)?
                .login_read(username, identity_provider)?,
            remembered: false,
        })
    }

    /// The mailbox read again after the LDAP bind, with the mapped `template` (see
    /// [`read_after_bind`]): an admin may have changed it meanwhile. With `may_reuse`, `serve`
    /// may answer with a read a login made moments ago while mailcow's tables are unchanged
    /// (`crate::serve::unchanged`); the per-login front ends always read.
    fn after_bind(
        &mut self,
        username: &str,
        template: Option<&str>,
        _may_reuse: bool,
        deadline: &Deadline,
    ) -> Result<Option<AfterBind>, LoginError> {
        Ok(read_after_bind(self.store(deadline)?, username, template)?)
    }

    /// The directory entry of a login (see [`Session::find_login`]), as the service account.
    fn find_login(
        &mut self,
        typed: &str,
        address: &str,
        deadline: &Deadline,
    ) -> Result<UserSearch, LoginError>;

    /// The user bind (see [`Session::check_password`]).
    fn check_password(
        &mut self,
        dn: &str,
        password: &str,
        deadline: &Deadline,
    ) -> Result<Result<(), InvalidCredentials>, LoginError>;

    /// The flow needs no more LDAP for this request: close or hand back those connections.
    fn directory_done(&mut self);
}

/// New connections for one request, closed with it (checkpassword, `dovecot-lua`, `login`):
/// one LDAP connection serves the search and then the user bind.
pub struct Fresh<'c> {
    config: &'c Config,
    store: Option<Store>,
    session: Option<Session<'c>>,
}

impl<'c> Fresh<'c> {
    pub fn new(config: &'c Config) -> Self {
        Fresh {
            config,
            store: None,
            session: None,
        }
    }

    fn session(&mut self, deadline: &Deadline) -> Result<&mut Session<'c>, DirectoryError> {
        match &mut self.session {
            Some(session) => Ok(session),
            empty => Ok(empty.insert(ldap::connect(&self.config.ldap, deadline)?)),
        }
    }
}

/// Connects to the database with at most what is left of the deadline.
pub fn connect_store(config: &Config, deadline: &Deadline) -> Result<Store, LoginError> {
    let timeout = deadline
        .cap(config.database.timeout)
        .ok_or(LoginError::Deadline("the database connection"))?;
    Ok(Store::connect(&config.database, timeout)?.with_redis(config.redis.as_ref()))
}

impl Connections for Fresh<'_> {
    fn store(&mut self, deadline: &Deadline) -> Result<&mut Store, LoginError> {
        match &mut self.store {
            Some(store) => Ok(store),
            empty => Ok(empty.insert(connect_store(self.config, deadline)?)),
        }
    }

    fn find_login(
        &mut self,
        typed: &str,
        address: &str,
        deadline: &Deadline,
    ) -> Result<UserSearch, LoginError> {
        Ok(self
            .session(deadline)?
            .find_login(typed, address, deadline)?)
    }

    fn check_password(
        &mut self,
        dn: &str,
        password: &str,
        deadline: &Deadline,
    ) -> Result<Result<(), InvalidCredentials>, LoginError> {
        Ok(self
            .session(deadline)?
            .check_password(dn, password, deadline)?)
    }

    fn directory_done(&mut self) {
        self.session = None;
    }
}
