//! The login flow's connections in `serve`: lent from pools that outlive the request. LDAP
//! searches run on connections bound as `ldap.bind_dn`, user binds on connections of their own
//! (as Dovecot's `auth_bind`), so that a search never runs as the last user bound.

use crate::config::Config;
use std::sync::Arc;

use crate::connections::{AfterBind, Connections, FirstRead, connect_store, read_after_bind};
use crate::deadline::Deadline;
use crate::ldap::{self, DirectoryError, InvalidCredentials, Session, UserSearch};
use crate::login::LoginError;
use crate::mailcow::{LoginRead, Store};

use super::pool::{Lease, Pool, Usage};
use super::remembered::Remembered;
use super::unchanged::Unchanged;
use crate::log::Logger;

/// A database connection idle longer than this is pinged before use: the server may have
/// closed it (wait_timeout, restart) meanwhile.
const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The pools of one configuration (a SIGHUP makes new ones).
pub struct Pools {
    config: &'static Config,
    /// Requests answered at once (`serve.workers`): a place here is taken before any other.
    pub workers: Pool<()>,
    search: Pool<Session<'static>>,
    bind: Pool<Session<'static>>,
    store: Pool<Store>,
    /// Mailbox rows of recent logins (`serve::remembered`).
    pub remembered: Remembered,
    /// Reads after the bind of recent logins, while mailcow's tables are unchanged.
    pub unchanged: Arc<Unchanged>,
}

impl Pools {
    pub fn new(config: &'static Config, logger: Arc<Logger>) -> Pools {
        let sizes = &config.serve;
        Pools {
            config,
            workers: Pool::new("workers", sizes.workers),
            search: Pool::new("ldap_search", sizes.ldap_search_connections),
            bind: Pool::new("ldap_bind", sizes.ldap_bind_connections),
            store: Pool::new("database", sizes.database_connections),
            remembered: Remembered::default(),
            unchanged: Unchanged::start(config, logger),
        }
    }

    pub fn usage(&self) -> [(&'static str, Usage); 4] {
        [
            (self.workers.name, self.workers.usage()),
            (self.search.name, self.search.usage()),
            (self.bind.name, self.bind.usage()),
            (self.store.name, self.store.usage()),
        ]
    }
}

/// What one request holds of the pools.
pub struct Pooled<'p> {
    pools: &'p Pools,
    store: Option<Lease<'p, Store>>,
    search: Option<Lease<'p, Session<'static>>>,
    bind: Option<Lease<'p, Session<'static>>>,
}

impl<'p> Pooled<'p> {
    pub fn new(pools: &'p Pools) -> Self {
        Pooled {
            pools,
            store: None,
            search: None,
            bind: None,
        }
    }

    /// Hands everything back; after a fault the connections still held are closed, as the
    /// fault may have left them broken.
    pub fn finish(mut self, fault: bool) {
        if fault {
            for lease in [&mut self.search, &mut self.bind].into_iter().flatten() {
                lease.discard();
            }
            if let Some(lease) = &mut self.store {
                lease.discard();
            }
        }
    }
}

/// Runs `operation` on a pooled LDAP connection, opening one if the lease holds none. A
/// connection that lay idle in the pool and fails (the server restarted, a firewall dropped
/// it) is replaced by a new one once; a new connection's failure is the answer.
fn on_directory<'p, R>(
    pool: &'p Pool<Session<'static>>,
    held: &mut Option<Lease<'p, Session<'static>>>,
    config: &'static Config,
    deadline: &Deadline,
    operation: impl Fn(&mut Session<'static>) -> Result<R, DirectoryError>,
) -> Result<R, LoginError> {
    let lease = match held {
        Some(lease) => lease,
        empty => empty.insert(pool.lease(deadline)?),
    };
    if lease.get().is_none() {
        lease.fill(ldap::connect(&config.ldap, deadline)?);
    }
    let reused = lease.idle_for.is_some();
    let session = lease.get().expect("filled above");
    match operation(session) {
        Err(e) if reused && !deadline.expired() && !matches!(e, DirectoryError::Deadline(_)) => {
            lease.discard();
            let session = lease.fill(ldap::connect(&config.ldap, deadline)?);
            Ok(operation(session)?)
        }
        answer => Ok(answer?),
    }
}

impl Connections for Pooled<'_> {
    fn store(&mut self, deadline: &Deadline) -> Result<&mut Store, LoginError> {
        let config = self.pools.config;
        let lease = match &mut self.store {
            Some(lease) => lease,
            empty => empty.insert(self.pools.store.lease(deadline)?),
        };
        let stale = lease.idle_for.is_some_and(|idle| idle > PING_AFTER_IDLE)
            && !lease.get().is_some_and(Store::ping);
        if stale || lease.get().is_none() {
            lease.fill(connect_store(config, deadline)?);
        }
        Ok(lease.get().expect("filled above"))
    }

    fn first_read(
        &mut self,
        username: &str,
        identity_provider: bool,
        may_remember: bool,
        deadline: &Deadline,
    ) -> Result<FirstRead, LoginError> {
        let remembered = &self.pools.remembered;
        let kept = (may_remember && !identity_provider)
            .then(|| remembered.get(username))
            .flatten();
        if let Some(mailbox) = kept {
            let read = LoginRead {
                mailbox: Some(mailbox),
                app_passwords: Vec::new(),
                identity_provider: None,
            };
            return Ok(FirstRead {
                read,
                remembered: true,
            });
        }
        let read_at = std::time::Instant::now();
        let read = self
            .store(deadline)?
            .login_read(username, identity_provider)?;
        remembered.keep(username, &read, read_at);
        Ok(FirstRead {
            read,
            remembered: false,
        })
    }

    fn after_bind(
        &mut self,
        username: &str,
        template: Option<&str>,
        may_reuse: bool,
        deadline: &Deadline,
    ) -> Result<Option<AfterBind>, LoginError> {
        // A handle of its own: `self.store()` below borrows all of `self`.
        let unchanged = self.pools.unchanged.clone();
        if let Some(read) = may_reuse
            .then(|| unchanged.reuse(username, template))
            .flatten()
        {
            return Ok(Some(read));
        }
        // Both taken before the read: a change the read misses moves the epoch on, and the
        // read's age counts from its start.
        let (epoch, read_at) = (unchanged.current(), std::time::Instant::now());
        let read = read_after_bind(self.store(deadline)?, username, template)?;
        unchanged.keep(username, epoch, read_at, template, &read);
        Ok(read)
    }

    fn find_login(
        &mut self,
        typed: &str,
        address: &str,
        deadline: &Deadline,
    ) -> Result<UserSearch, LoginError> {
        let pools = self.pools;
        on_directory(
            &pools.search,
            &mut self.search,
            pools.config,
            deadline,
            |s| s.find_login(typed, address, deadline),
        )
    }

    fn check_password(
        &mut self,
        dn: &str,
        password: &str,
        deadline: &Deadline,
    ) -> Result<Result<(), InvalidCredentials>, LoginError> {
        let pools = self.pools;
        on_directory(&pools.bind, &mut self.bind, pools.config, deadline, |s| {
            s.check_password(dn, password, deadline)
        })
    }

    fn directory_done(&mut self) {
        self.search = None;
        self.bind = None;
    }
}
