//! The `serve:` section.

use std::path::PathBuf;

use serde::Deserialize;

/// The `serve` command's settings (read by the other commands too, so that a typo is an error
/// everywhere; only `serve` acts on them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `host:port`, or a Unix socket path (starting with `/`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The shared secret every request carries (`Authorization: Bearer …`); `serve` refuses to
    /// start without it. Read by `serve` only, with the trust checks of the other secrets.
    pub token_file: Option<PathBuf>,
    /// Requests answered at the same time (the rest wait in the queue).
    #[serde(default = "default_serve_workers")]
    pub workers: usize,
    /// Pooled LDAP connections bound as `ldap.bind_dn`, for the user searches.
    #[serde(default = "default_search_connections")]
    pub ldap_search_connections: usize,
    /// Pooled LDAP connections for the user binds.
    #[serde(default = "default_serve_workers")]
    pub ldap_bind_connections: usize,
    #[serde(default = "default_serve_workers")]
    pub database_connections: usize,
    /// A client gets this long to send a request (and to take its answer) before it is dropped.
    #[serde(default = "default_client_timeout_ms")]
    pub client_timeout_ms: u64,
    /// With `ldap.from_mailcow`: how often `serve` reads mailcow's settings again.
    #[serde(default = "default_mailcow_settings_refresh_s")]
    pub mailcow_settings_refresh_s: u64,
    /// How often `serve` asks the database whether mailcow's mailbox, domain or templates
    /// tables changed; while they have not, a login's read after its LDAP bind is
    /// taken from one a login made moments ago (`serve::unchanged`). 0: every login reads.
    #[serde(default = "default_change_poll_ms")]
    pub change_poll_ms: u64,
}

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:9077";

fn default_listen() -> String {
    DEFAULT_LISTEN.into()
}
fn default_serve_workers() -> usize {
    16
}
fn default_search_connections() -> usize {
    4
}
fn default_client_timeout_ms() -> u64 {
    5_000
}
fn default_mailcow_settings_refresh_s() -> u64 {
    60
}
/// `serve.change_poll_ms` besides 0: faster polls would load the database; slower ones would
/// let a reused read outlive the 5 s it is kept for.
const CHANGE_POLL_MS: std::ops::RangeInclusive<u64> = 10..=1000;

fn default_change_poll_ms() -> u64 {
    100
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: default_listen(),
            token_file: None,
            workers: default_serve_workers(),
            ldap_search_connections: default_search_connections(),
            ldap_bind_connections: default_serve_workers(),
            database_connections: default_serve_workers(),
            client_timeout_ms: default_client_timeout_ms(),
            mailcow_settings_refresh_s: default_mailcow_settings_refresh_s(),
            change_poll_ms: default_change_poll_ms(),
        }
    }
}

impl ServeConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        let positive = [
            ("workers", self.workers as u64),
            (
                "ldap_search_connections",
                self.ldap_search_connections as u64,
            ),
            ("ldap_bind_connections", self.ldap_bind_connections as u64),
            ("database_connections", self.database_connections as u64),
            ("client_timeout_ms", self.client_timeout_ms),
            (
                "mailcow_settings_refresh_s",
                self.mailcow_settings_refresh_s,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, n)| *n == 0) {
            return Err(format!("serve.{key}: must be greater than 0"));
        }
        if self.change_poll_ms != 0 && !CHANGE_POLL_MS.contains(&self.change_poll_ms) {
            return Err(format!(
                "serve.change_poll_ms: must be 0 (off) or {} to {}",
                CHANGE_POLL_MS.start(),
                CHANGE_POLL_MS.end()
            ));
        }
        Ok(())
    }
}
