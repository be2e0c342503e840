//! What a login reads before LDAP (the mailbox, its app passwords and, with
//! `ldap.from_mailcow`, mailcow's LDAP settings: one round trip) and the `sasl_log` row it
//! leaves behind.

use mysql::prelude::Queryable;
use mysql::{Row, Text};

use super::{Columns, Context, MAILBOX_BY_USERNAME, Store, StoreError, bind, mailbox_from};
use crate::config::IdpRows;
use crate::mailcow::{Mailbox, access_key};

/// The services an app password row has a flag for, in the column order of [`APP_PASSWORDS`].
const APP_PASSWORD_SERVICES: [&str; 6] = ["imap", "smtp", "dav", "eas", "pop3", "sieve"];

/// The active app passwords of a mailbox (mailcow's `apppass_login()`; the mailbox and domain
/// conditions of its join are the login's own access checks on the mailbox row).
const APP_PASSWORDS: &str = "SELECT id, password, imap_access, smtp_access, dav_access, \
     eas_access, pop3_access, sieve_access FROM app_passwd \
     WHERE active = '1' AND mailbox = ? ORDER BY id";

/// The settings mailcow's UI stores for its identity provider (the keys that `IDP_KEYS` in
/// config/mailcow_idp.rs lists).
const IDENTITY_PROVIDER: &str = "SELECT `key`, `value` FROM identity_provider WHERE `key` IN \
     ('authsource', 'host', 'port', 'basedn', 'username_field', 'filter', 'attribute_field', \
     'binddn', 'bindpass', 'use_ssl', 'use_tls', 'ignore_ssl_error', 'login_provisioning', \
     'default_template', 'mappers', 'templates')";

/// As mailcow's `set_sasl_log()`: one row per (service, client IP, mailbox), the newest login.
const SASL_LOG: &str =
    "REPLACE INTO sasl_log (username, real_rip, service, app_password) VALUES (?, ?, ?, ";

/// One active row of `app_passwd`.
#[derive(Debug, Clone)]
pub struct AppPassword {
    pub id: i64,
    /// `{SCHEME}…` as stored.
    pub hash: String,
    /// The services whose `<service>_access` is 1.
    services: Vec<&'static str>,
}

impl AppPassword {
    /// Whether this app password may be used for Dovecot's `service` (a service without a
    /// column, e.g. `lmtp`, never: mailcow compares a missing column with '1').
    pub fn allows(&self, service: &str) -> bool {
        let key = access_key(service);
        self.services
            .iter()
            .any(|s| key.strip_suffix("_access") == Some(s))
    }
}

/// What a login reads before it contacts LDAP.
#[derive(Debug)]
pub struct LoginRead {
    pub mailbox: Option<Mailbox>,
    /// Empty without a mailbox.
    pub app_passwords: Vec<AppPassword>,
    /// mailcow's identity provider settings, when asked for.
    pub identity_provider: Option<IdpRows>,
}

impl Store {
    /// The mailbox, its active app passwords and, with `identity_provider`, mailcow's
    /// identity provider settings: one round trip.
    pub fn login_read(
        &mut self,
        username: &str,
        identity_provider: bool,
    ) -> Result<LoginRead, StoreError> {
        const CONTEXT: &str = "looking up the mailbox";
        let mut text = format!(
            "{}; {}",
            bind(MAILBOX_BY_USERNAME, &[username]),
            bind(APP_PASSWORDS, &[username])
        );
        if identity_provider {
            text.push_str("; ");
            text.push_str(IDENTITY_PROVIDER);
        }
        let mut sets = self.conn.query_iter(text).context(CONTEXT)?;
        let mailbox = next_set(&mut sets, CONTEXT)?
            .into_iter()
            .next()
            .map(|row| mailbox_from(&mut Columns::new(row, "mailbox")))
            .transpose()?;
        let app_passwords = next_set(&mut sets, CONTEXT)?
            .into_iter()
            .map(|row| app_password_from(&mut Columns::new(row, "app_passwd")))
            .collect::<Result<_, _>>()?;
        let identity_provider = if identity_provider {
            Some(idp_rows(next_set(&mut sets, CONTEXT)?)?)
        } else {
            None
        };
        Ok(LoginRead {
            mailbox,
            app_passwords,
            identity_provider,
        })
    }

    /// mailcow's identity provider settings (for the commands; a login reads them with
    /// [`Store::login_read`]).
    pub fn identity_provider(&mut self) -> Result<IdpRows, StoreError> {
        let rows: Vec<Row> = self
            .conn
            .query(IDENTITY_PROVIDER)
            .context("reading mailcow's identity provider settings")?;
        idp_rows(rows)
    }

    /// Records a successful login as mailcow's `set_sasl_log()` does; `app_password` is the
    /// id of the app password used, 0 for any other password.
    pub fn write_sasl_log(
        &mut self,
        username: &str,
        real_rip: &str,
        service: &str,
        app_password: i64,
    ) -> Result<(), StoreError> {
        let text = format!(
            "{}{app_password})",
            bind(SASL_LOG, &[username, real_rip, service])
        );
        self.conn.query_drop(text).context("writing sasl_log")
    }
}

/// The rows of the next result set of a multi-statement query (none when there is no set).
fn next_set(
    sets: &mut mysql::QueryResult<'_, '_, '_, Text>,
    context: &'static str,
) -> Result<Vec<Row>, StoreError> {
    match sets.iter() {
        Some(set) => set.collect::<Result<_, _>>().context(context),
        None => Ok(Vec::new()),
    }
}

fn idp_rows(rows: Vec<Row>) -> Result<IdpRows, StoreError> {
    rows.into_iter()
        .map(|row| {
            let mut c = Columns::new(row, "identity_provider");
            let key: String = c.next()?;
            let value: String = c.next()?;
            Ok((key, value.into()))
        })
        .collect()
}

fn app_password_from(c: &mut Columns) -> Result<AppPassword, StoreError> {
    let id = c.next()?;
    let hash = c.next()?;
    let mut services = Vec::new();
    for service in APP_PASSWORD_SERVICES {
        let flag: i64 = c.next()?;
        if flag == 1 {
            services.push(service);
        }
    }
    Ok(AppPassword { id, hash, services })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IDP_KEYS;

    #[test]
    fn the_settings_query_reads_every_key_the_config_uses() {
        for key in IDP_KEYS {
            assert!(IDENTITY_PROVIDER.contains(&format!("'{key}'")), "{key}");
        }
        assert_eq!(IDENTITY_PROVIDER.matches('\'').count(), 2 * IDP_KEYS.len());
    }
}
