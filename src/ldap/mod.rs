//! The LDAP directory: host failover, TLS, the service bind, the user search and the user bind.

pub mod filter;
mod tls;

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::PagedResults;
use ldap3::{LdapConn, LdapConnSettings, LdapError, Scope, SearchEntry, StdStream};
use secrecy::ExposeSecret;

use crate::config::{LdapConfig, Transport};
use crate::deadline::Deadline;

/// LDAP result codes this program tells apart.
mod rc {
    pub const SUCCESS: u32 = 0;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const BUSY: u32 = 51;
    pub const UNAVAILABLE: u32 = 52;
}

/// Every LDAP failure that is not an answer about the user: always a temporary failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirectoryError {
    #[error("all LDAP hosts unreachable: {0}")]
    Unreachable(String),
    #[error("LDAP service bind as {bind_dn} on {host} refused: {detail}")]
    ServiceBind {
        host: String,
        bind_dn: String,
        detail: String,
    },
    #[error("LDAP {operation} on {host} failed: {detail}")]
    Operation {
        host: String,
        operation: &'static str,
        detail: String,
        /// The connection failed (I/O, timeout, busy/unavailable), not the request: another
        /// host may answer.
        transport: bool,
    },
    #[error("TLS setup failed: {0}")]
    TlsSetup(String),
    #[error("deadline exceeded during the LDAP {0}")]
    Deadline(&'static str),
}

/// What the directory says about a login name.
#[derive(Debug)]
pub(crate) enum UserSearch {
    Found(UserEntry),
    NotFound,
    Ambiguous(String),
}

#[derive(Debug, Clone)]
pub(crate) struct UserEntry {
    pub dn: String,
    /// All values of `ldap.attribute_field`, in server order.
    pub mapping_values: Vec<String>,
    /// The first value of `ldap.name_field`, if any.
    pub display_name: Option<String>,
}

/// One entry of the sync's listing ([`Session::all_users`]).
#[derive(Debug, Clone)]
pub(crate) struct ListedUser {
    /// All values of `ldap.username_field`, in server order (the sync uses the first).
    pub usernames: Vec<String>,
    pub entry: UserEntry,
}

/// Entries per page of the sync's paged search (Active Directory's MaxPageSize is 1000,
/// OpenLDAP's default size limit 500).
pub(crate) const PAGE_SIZE: i32 = 500;

/// An open connection bound as the service account.
pub(crate) struct Session<'a> {
    config: &'a LdapConfig,
    conn: LdapConn,
    host: String,
    /// Position of `host` in `ldap.hosts`, and the TLS setup, to move on to the next host.
    host_index: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Opens a connection to the first host that answers and binds as the service account.
///
/// The next host is tried only when this one fails at the transport level (refused, timeout,
/// TLS handshake, busy/unavailable); an answer such as invalid credentials stops the loop.
pub(crate) fn connect<'a>(
    config: &'a LdapConfig,
    deadline: &Deadline,
) -> Result<Session<'a>, DirectoryError> {
    connect_from(config, tls_config(config)?, 0, deadline)
}

/// [`connect`], starting at `ldap.hosts[first]`.
fn connect_from<'a>(
    config: &'a LdapConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    first: usize,
    deadline: &Deadline,
) -> Result<Session<'a>, DirectoryError> {
    let mut failures = Vec::new();
    for (index, host) in config.hosts.iter().enumerate().skip(first) {
        match connect_host(config, index, tls.clone(), deadline) {
            Ok(session) => return Ok(session),
            // A timeout cut short by the deadline says nothing about the host.
            Err(HostFailure::TryNext(_)) if deadline.expired() => {
                return Err(DirectoryError::Deadline("connect"));
            }
            Err(HostFailure::TryNext(why)) => failures.push(format!("{host}: {why}")),
            Err(HostFailure::Fatal(e)) => return Err(e),
        }
    }
    Err(DirectoryError::Unreachable(failures.join("; ")))
}

/// Connects to this one host only (for `test-connection`).
pub(crate) fn connect_to<'a>(
    config: &'a LdapConfig,
    host: &str,
    deadline: &Deadline,
) -> Result<Session<'a>, DirectoryError> {
    let index = config
        .hosts
        .iter()
        .position(|h| h == host)
        .unwrap_or_default();
    connect_host(config, index, tls_config(config)?, deadline).map_err(|failure| match failure {
        HostFailure::TryNext(why) => DirectoryError::Unreachable(format!("{host}: {why}")),
        HostFailure::Fatal(e) => e,
    })
}

fn tls_config(config: &LdapConfig) -> Result<Option<Arc<rustls::ClientConfig>>, DirectoryError> {
    match config.transport {
        Transport::Plain => Ok(None),
        _ => tls::client_config(config)
            .map(Some)
            .map_err(DirectoryError::TlsSetup),
    }
}

enum HostFailure {
    TryNext(String),
    Fatal(DirectoryError),
}

fn connect_host<'a>(
    config: &'a LdapConfig,
    host_index: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    deadline: &Deadline,
) -> Result<Session<'a>, HostFailure> {
    let host = config.hosts[host_index].as_str();
    let connect_timeout = deadline
        .cap(config.connect_timeout)
        .ok_or(HostFailure::Fatal(DirectoryError::Deadline("connect")))?;
    let stream = tcp_connect(host, config.port, connect_timeout).map_err(HostFailure::TryNext)?;
    let scheme = if config.transport == Transport::Ldaps {
        "ldaps"
    } else {
        "ldap"
    };
    let url_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let url = format!("{scheme}://{url_host}:{}", config.port);
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(connect_timeout)
        .set_std_stream(StdStream::Tcp(stream))
        .set_starttls(config.transport == Transport::StartTls)
        .set_no_tls_verify(config.ignore_ssl_errors);
    if let Some(tls) = &tls {
        settings = settings.set_config(tls.clone());
    }
    let conn =
        LdapConn::with_settings(settings, &url).map_err(|e| HostFailure::TryNext(describe(&e)))?;
    let mut session = Session {
        config,
        conn,
        host: host.to_owned(),
        host_index,
        tls,
    };
    let timeout = deadline
        .cap(config.timeout)
        .ok_or(HostFailure::Fatal(DirectoryError::Deadline("service bind")))?;
    let result = session
        .conn
        .with_timeout(timeout)
        .simple_bind(&config.bind_dn, config.bind_password.expose_secret());
    match result {
        Ok(r) if r.rc == rc::SUCCESS => Ok(session),
        Ok(r) if r.rc == rc::BUSY || r.rc == rc::UNAVAILABLE => Err(HostFailure::TryNext(format!(
            "server busy or unavailable (rc={})",
            r.rc
        ))),
        Ok(r) => Err(HostFailure::Fatal(DirectoryError::ServiceBind {
            host: host.to_owned(),
            bind_dn: config.bind_dn.clone(),
            detail: format!("rc={} {}", r.rc, r.text),
        })),
        Err(e) => Err(HostFailure::TryNext(describe(&e))),
    }
}

/// TCP connect with a timeout and TCP_NODELAY: without it every TLS bind stalls ~40 ms on
/// Nagle + delayed ACK.
fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?;
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                return Ok(stream);
            }
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// One line for an ldap3 error, naming timeouts and TLS problems in plain words.
fn describe(e: &LdapError) -> String {
    match e {
        LdapError::Timeout { .. } => "timed out".into(),
        LdapError::Rustls { source } => format!("TLS: {source}"),
        LdapError::Io { source } if source.get_ref().is_some_and(|s| s.is::<rustls::Error>()) => {
            format!("TLS: {source}")
        }
        other => other.to_string(),
    }
}

impl Session<'_> {
    fn op_timeout(
        &self,
        deadline: &Deadline,
        operation: &'static str,
    ) -> Result<Duration, DirectoryError> {
        deadline
            .cap(self.config.timeout)
            .ok_or(DirectoryError::Deadline(operation))
    }

    /// A failed operation; one that ran into the overall deadline is reported as such.
    fn op_error(
        &self,
        deadline: &Deadline,
        operation: &'static str,
        detail: String,
    ) -> DirectoryError {
        self.failed(deadline, operation, detail, false)
    }

    /// A failed operation; one that ran into the overall deadline is reported as such.
    fn failed(
        &self,
        deadline: &Deadline,
        operation: &'static str,
        detail: String,
        transport: bool,
    ) -> DirectoryError {
        if deadline.expired() {
            return DirectoryError::Deadline(operation);
        }
        DirectoryError::Operation {
            host: self.host.clone(),
            operation,
            detail,
            transport,
        }
    }

    /// The entry of a login: `typed` is the name as the user typed it, `address` its mailcow
    /// form (lower case, IDN domain in ASCII). The directory may hold either spelling, so it is
    /// asked for both when they differ.
    pub(crate) fn find_login(
        &mut self,
        typed: &str,
        address: &str,
        deadline: &Deadline,
    ) -> Result<UserSearch, DirectoryError> {
        let typed = typed.trim();
        let spellings: &[&str] = if typed.eq_ignore_ascii_case(address) {
            &[address]
        } else {
            &[typed, address]
        };
        loop {
            match self.find_user(spellings, deadline) {
                // A host that took the service bind but cannot search (a hung or overloaded
                // directory server): the next host is asked, as when connecting.
                Err(DirectoryError::Operation {
                    transport: true, ..
                }) if self.host_index + 1 < self.config.hosts.len() => {
                    *self =
                        connect_from(self.config, self.tls.clone(), self.host_index + 1, deadline)?;
                }
                answer => return answer,
            }
        }
    }

    /// Searches `base_dn` (subtree) for the one entry whose username field equals one of
    /// `logins` (spellings of the same name).
    fn find_user(
        &mut self,
        logins: &[&str],
        deadline: &Deadline,
    ) -> Result<UserSearch, DirectoryError> {
        let cfg = self.config;
        let filter = filter::user_filter(cfg.filter.as_deref(), &cfg.username_field, logins);
        let mut attrs = vec![cfg.name_field.as_str()];
        attrs.extend(cfg.attribute_field.as_deref());
        let timeout = self.op_timeout(deadline, "search")?;
        let result = self
            .conn
            .with_timeout(timeout)
            .search(&cfg.base_dn, Scope::Subtree, &filter, attrs)
            .map_err(|e| self.failed(deadline, "search", describe(&e), true))?;
        let ldap3::SearchResult(entries, status) = result;
        match status.rc {
            rc::SUCCESS => {}
            rc::BUSY | rc::UNAVAILABLE => {
                let detail = format!("server busy or unavailable (rc={})", status.rc);
                return Err(self.failed(deadline, "search", detail, true));
            }
            // Cut short by the server's size limit: several entries match. Without any entry
            // the limit itself is broken, which says nothing about the user.
            rc::SIZE_LIMIT_EXCEEDED if !entries.is_empty() => {
                return Ok(UserSearch::Ambiguous(format!("at least {}", entries.len())));
            }
            rc::NO_SUCH_OBJECT => {
                return Err(self.op_error(
                    deadline,
                    "search",
                    format!("base DN {} does not exist", cfg.base_dn),
                ));
            }
            code => {
                return Err(self.op_error(
                    deadline,
                    "search",
                    format!("rc={code} {}", status.text),
                ));
            }
        }
        // Referrals (which ldap3 never chases) are not entries.
        let mut entries: Vec<SearchEntry> = entries
            .into_iter()
            .filter(|e| !e.is_ref())
            .map(SearchEntry::construct)
            .collect();
        match entries.len() {
            0 => Ok(UserSearch::NotFound),
            1 => Ok(UserSearch::Found(user_entry(cfg, entries.remove(0)))),
            n => Ok(UserSearch::Ambiguous(n.to_string())),
        }
    }

    /// Every entry under `base_dn` (subtree) that matches the admin filter and has a username
    /// field, fetched with the Simple Paged Results control ([`PAGE_SIZE`] per page), so that
    /// the server's size limit per page does not cut the list short.
    ///
    /// Each operation (every page) gets `ldap.timeout_ms`; there is no overall deadline, as a
    /// large directory takes as long as it takes. A listing the server cut short (size limit,
    /// e.g. a server that ignores paging) is an error, never a silently partial list.
    ///
    /// Each entry goes to `each` as it arrives (nothing is kept here); the number of entries
    /// when the listing is complete.
    pub(crate) fn list_users(
        &mut self,
        mut each: impl FnMut(ListedUser),
    ) -> Result<u64, DirectoryError> {
        let cfg = self.config;
        let filter = filter::all_users_filter(cfg.filter.as_deref(), &cfg.username_field);
        let mut attrs: Vec<String> = Vec::new();
        let wanted = [
            Some(&cfg.username_field),
            Some(&cfg.name_field),
            cfg.attribute_field.as_ref(),
        ];
        for a in wanted.into_iter().flatten() {
            if !attrs.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                attrs.push(a.clone());
            }
        }
        let error = |host: &str, detail: String| DirectoryError::Operation {
            host: host.to_owned(),
            operation: "paged search",
            detail,
            transport: false,
        };
        let host = self.host.clone();
        let mut stream = self
            .conn
            .with_timeout(cfg.timeout)
            .streaming_search_with(
                PagedResults::new(PAGE_SIZE),
                &cfg.base_dn,
                Scope::Subtree,
                &filter,
                attrs,
            )
            .map_err(|e| error(&host, describe(&e)))?;
        let mut listed: u64 = 0;
        loop {
            match stream.next() {
                Ok(Some(entry)) if entry.is_ref() || entry.is_intermediate() => {}
                Ok(Some(entry)) => {
                    let entry = SearchEntry::construct(entry);
                    listed += 1;
                    each(ListedUser {
                        usernames: values(&entry, &cfg.username_field),
                        entry: user_entry(cfg, entry),
                    });
                }
                Ok(None) => break,
                Err(e) => return Err(error(&host, describe(&e))),
            }
        }
        let status = stream.result();
        match status.rc {
            rc::SUCCESS => Ok(listed),
            rc::SIZE_LIMIT_EXCEEDED => Err(error(
                &host,
                format!(
                    "the server's size limit stopped the listing after {} entries (rc=4); \
                     allow paged searches past it for {} (OpenLDAP: limits ... \
                     size.prtotal=unlimited)",
                    listed, cfg.bind_dn
                ),
            )),
            rc::NO_SUCH_OBJECT => Err(error(
                &host,
                format!("base DN {} does not exist", cfg.base_dn),
            )),
            code => Err(error(&host, format!("rc={code} {}", status.text))),
        }
    }

    /// Reads the base DN entry itself, proving it exists and the service account may see it.
    pub(crate) fn base_dn_exists(&mut self, deadline: &Deadline) -> Result<(), DirectoryError> {
        let timeout = self.op_timeout(deadline, "base DN check")?;
        let base = &self.config.base_dn;
        let result = self
            .conn
            .with_timeout(timeout)
            .search(base, Scope::Base, "(objectClass=*)", vec!["1.1"])
            .map_err(|e| self.op_error(deadline, "base DN check", describe(&e)))?;
        match (result.1.rc, result.0.len()) {
            (rc::SUCCESS, 1) => Ok(()),
            (code, _) => Err(self.op_error(
                deadline,
                "base DN check",
                format!("{base}: rc={code} {}", result.1.text),
            )),
        }
    }

    /// Binds as `dn` with the user's password. `Err(InvalidCredentials)` is invalid credentials (49),
    /// with the server's diagnostic text: Active Directory says there why (`data 52e` wrong
    /// password, `775` locked, `533` disabled, `532` expired, …).
    pub(crate) fn check_password(
        &mut self,
        dn: &str,
        password: &str,
        deadline: &Deadline,
    ) -> Result<Result<(), InvalidCredentials>, DirectoryError> {
        let timeout = self.op_timeout(deadline, "user bind")?;
        let result = self
            .conn
            .with_timeout(timeout)
            .simple_bind(dn, password)
            .map_err(|e| self.op_error(deadline, "user bind", describe(&e)))?;
        match result.rc {
            rc::SUCCESS => Ok(Ok(())),
            rc::INVALID_CREDENTIALS => Ok(Err(InvalidCredentials(result.text))),
            code => Err(self.op_error(deadline, "user bind", format!("rc={code} {}", result.text))),
        }
    }
}

/// The server refused the user's password; its diagnostic text (often empty).
#[derive(Debug)]
pub(crate) struct InvalidCredentials(pub String);

/// The mapping values and display name of an entry, as the login and the sync read them.
fn user_entry(cfg: &LdapConfig, entry: SearchEntry) -> UserEntry {
    UserEntry {
        mapping_values: cfg
            .attribute_field
            .as_deref()
            .map(|a| values(&entry, a))
            .unwrap_or_default(),
        display_name: values(&entry, &cfg.name_field).into_iter().next(),
        dn: entry.dn,
    }
}

/// The values of an attribute, whose name the server may spell in another case.
fn values(entry: &SearchEntry, attribute: &str) -> Vec<String> {
    entry
        .attrs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(attribute))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}
