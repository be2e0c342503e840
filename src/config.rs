//! The configuration file: YAML as the admin writes it, validated into a [`Config`].
//!
//! Every problem is reported as one line naming the key, because a broken configuration must
//! show up in Dovecot's log as the admin's fault (temporary failure), never as a wrong password.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::file_trust;

mod mailcow_idp;
mod redis;
mod serve;
#[cfg(test)]
pub(crate) use mailcow_idp::IDP_KEYS;
pub(crate) use mailcow_idp::{IdpRows, SettingOrigin, same_connections};
pub use redis::{RedisAddress, RedisConfig};
pub use serve::ServeConfig;

/// Where the configuration lives unless `--config` or `MAILCOW_LDAP_AUTH_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/mailcow-ldap-auth/config.yml";

#[derive(Debug, thiserror::Error)]
#[error("configuration error in {path}: {message}")]
pub struct ConfigError {
    path: String,
    message: String,
}

impl ConfigError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written (serde); `deny_unknown_fields` turns typos into errors naming the key.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ldap: RawLdap,
    attribute_mapping: Option<Vec<Mapping>>,
    default_template: Option<String>,
    login_provisioning: Option<bool>,
    #[serde(default = "default_deadline_ms")]
    deadline_ms: u64,
    database: RawDatabase,
    #[serde(default)]
    dovecot: DovecotConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    sync: SyncConfig,
    redis: Option<redis::RawRedis>,
    #[serde(default)]
    serve: ServeConfig,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HostList {
    List(Vec<String>),
    CommaSeparated(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    /// Read the settings mailcow's UI has fields for from its `identity_provider` table.
    #[serde(default)]
    from_mailcow: bool,
    hosts: Option<HostList>,
    port: Option<u16>,
    use_ssl: Option<bool>,
    use_tls: Option<bool>,
    ignore_ssl_errors: Option<bool>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    ca_only: bool,
    base_dn: Option<String>,
    username_field: Option<String>,
    filter: Option<String>,
    attribute_field: Option<String>,
    #[serde(default = "default_name_field")]
    name_field: String,
    bind_dn: Option<String>,
    #[serde(default, deserialize_with = "inline_secret")]
    bind_password: Option<SecretString>,
    bind_password_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    socket: Option<PathBuf>,
    host: Option<String>,
    port: Option<u16>,
    name: String,
    user: String,
    #[serde(default, deserialize_with = "inline_secret")]
    password: Option<SecretString>,
    password_file: Option<PathBuf>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

/// A password written in the file. Only strings are accepted, and an error never repeats
/// the value: serde's usual "invalid type: integer `1234`" would put an unquoted numeric
/// password into Dovecot's log.
fn inline_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    struct SecretVisitor;
    impl serde::de::Visitor<'_> for SecretVisitor {
        type Value = SecretString;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a quoted string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(SecretString::from(v.to_owned()))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(not_a_string())
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(not_a_string())
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(not_a_string())
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(not_a_string())
        }
    }
    fn not_a_string<E: serde::de::Error>() -> E {
        E::custom("a password must be a quoted string (value not shown)")
    }
    d.deserialize_any(SecretVisitor).map(Some)
}

fn yes() -> bool {
    true
}
/// `deadline_ms` when the file does not set it.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_millis(10_000);

fn default_deadline_ms() -> u64 {
    DEFAULT_DEADLINE.as_millis() as u64
}
fn default_name_field() -> String {
    "displayName".into()
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_timeout_ms() -> u64 {
    5_000
}

// ---------------------------------------------------------------------------------------------
// The validated configuration the program runs with.

#[derive(Debug, Clone)]
pub struct Config {
    pub ldap: LdapConfig,
    /// In file order: the first entry matching any value of the attribute wins.
    pub attribute_mapping: Vec<Mapping>,
    /// Used only when creating a mailbox whose attribute maps to nothing.
    pub default_template: Option<String>,
    pub login_provisioning: bool,
    /// Overall time budget of one login.
    pub deadline: Duration,
    pub database: DatabaseConfig,
    pub dovecot: DovecotConfig,
    pub log: LogConfig,
    pub sync: SyncConfig,
    /// With `ldap.from_mailcow`: what the file says about LDAP. `ldap`, `attribute_mapping`,
    /// `default_template` and `login_provisioning` are then placeholders, completed per use by
    /// [`Config::with_mailcow_settings`].
    pub from_mailcow: Option<mailcow_idp::LocalLdap>,
    /// mailcow's Redis, for the template rate limits; `None`: they are logged as skipped.
    pub redis: Option<RedisConfig>,
    pub serve: ServeConfig,
    /// Problems worth a warning that do not stop the program (e.g. a world-readable secret).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    StartTls,
    Ldaps,
}

#[derive(Debug, Clone)]
pub struct LdapConfig {
    pub hosts: Vec<String>,
    pub port: u16,
    pub transport: Transport,
    pub ignore_ssl_errors: bool,
    pub ca_file: Option<PathBuf>,
    /// Trust only `ca_file`, not the system roots.
    pub ca_only: bool,
    pub base_dn: String,
    pub username_field: String,
    pub filter: Option<String>,
    pub attribute_field: Option<String>,
    pub name_field: String,
    pub bind_dn: String,
    pub bind_password: SecretString,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

impl LdapConfig {
    /// Settings that expose the passwords on the network: `test-connection` warns about them
    /// on every run (logins do not, to keep the mail log for logins).
    pub(crate) fn exposure_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.ignore_ssl_errors {
            warnings.push(
                "ldap.ignore_ssl_errors is on: the LDAP server's certificate is not verified, \
                 so whoever sits on the network path can pose as the server and read every \
                 password; ldap.ca_file and ldap.ca_only are ignored"
                    .into(),
            );
        }
        let remote: Vec<&str> = self
            .hosts
            .iter()
            .map(String::as_str)
            .filter(|h| !is_loopback(h))
            .collect();
        if self.transport == Transport::Plain && !remote.is_empty() {
            warnings.push(format!(
                "ldap: neither use_ssl nor use_tls is on: passwords travel in clear to {}",
                remote.join(", ")
            ));
        }
        warnings
    }
}

/// A host that traffic to never leaves the machine for.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub attribute: String,
    pub template: String,
}

#[derive(Debug, Clone)]
pub enum DatabaseAddress {
    Socket(PathBuf),
    Tcp { host: String, port: u16 },
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub address: DatabaseAddress,
    pub name: String,
    pub user: String,
    pub password: SecretString,
    /// Connect, and each read or write.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DovecotConfig {
    /// Static userdb fields; values may use `{username}`, `{local_part}` and `{domain}`.
    #[serde(default)]
    pub userdb_fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StderrLevel {
    None,
    #[default]
    Errors,
    All,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "yes")]
    pub syslog: bool,
    #[serde(default)]
    pub stderr: StderrLevel,
    /// Write mailcow's `sasl_log` row for every successful login (the UI's "last logins").
    #[serde(default = "yes")]
    pub sasl_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            syslog: true,
            stderr: StderrLevel::Errors,
            sasl_log: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    #[serde(default)]
    pub import_users: bool,
    #[serde(default)]
    pub periodic_full_sync: bool,
    #[serde(default = "default_interval")]
    pub interval_minutes: u64,
    /// Deactivate LDAP-backed mailboxes missing from `missing_runs` complete listings in a row.
    #[serde(default)]
    pub deactivate_missing: bool,
    #[serde(default = "default_missing_runs")]
    pub missing_runs: u32,
    /// A run that would deactivate more than this share (percent) of the LDAP-backed
    /// mailboxes deactivates none.
    #[serde(default = "default_max_deactivate_percent")]
    pub max_deactivate_percent: u32,
}

fn default_interval() -> u64 {
    15
}
fn default_missing_runs() -> u32 {
    3
}
fn default_max_deactivate_percent() -> u32 {
    10
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            import_users: false,
            periodic_full_sync: false,
            interval_minutes: default_interval(),
            deactivate_missing: false,
            missing_runs: default_missing_runs(),
            max_deactivate_percent: default_max_deactivate_percent(),
        }
    }
}

/// The placeholders `dovecot.userdb_fields` values may use.
pub(crate) const USERDB_PLACEHOLDERS: [&str; 3] = ["username", "local_part", "domain"];

impl Config {
    /// Reads and validates the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            zeroize::Zeroizing::new(read_trusted(path).map_err(|e| ConfigError::new(path, e))?);
        Config::from_yaml(&text, path)
    }

    /// Validates `text`, the contents of the file at `path` (named in errors; its mode decides
    /// the warning about inline secrets). Files the text refers to (`*_file`) are read.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            serde_norway::from_str(text).map_err(|e| ConfigError::new(path, e.to_string()))?;
        let mut warnings = Vec::new();
        let inline_secret = raw.ldap.bind_password.is_some()
            || raw.database.password.is_some()
            || raw
                .redis
                .as_ref()
                .is_some_and(redis::RawRedis::has_inline_password);
        if inline_secret && readable_by_others(path) {
            warnings.push(format!(
                "{} holds passwords and is readable by other users; chmod o-r it",
                path.display()
            ));
        }
        let err = |message: String| ConfigError::new(path, message);
        let from_mailcow = raw.ldap.from_mailcow;
        if from_mailcow {
            mailcow_idp::refuse_duplicates(&raw).map_err(err)?;
        }
        let (ldap, local_ldap) = if from_mailcow {
            let local = mailcow_idp::LocalLdap::from_raw(raw.ldap);
            (local.placeholder(), Some(local))
        } else {
            (validate_ldap(raw.ldap, &mut warnings).map_err(err)?, None)
        };
        let database = validate_database(raw.database, &mut warnings).map_err(err)?;
        let redis = raw
            .redis
            .map(|r| redis::validate(r, &mut warnings))
            .transpose()
            .map_err(err)?;
        validate_userdb_fields(&raw.dovecot.userdb_fields).map_err(err)?;
        let attribute_mapping = raw.attribute_mapping.unwrap_or_default();
        for (i, m) in attribute_mapping.iter().enumerate() {
            if m.template.trim().is_empty() {
                return Err(err(format!(
                    "attribute_mapping[{i}].template: must not be empty"
                )));
            }
        }
        raw.serve.validate().map_err(err)?;
        if raw.deadline_ms == 0 {
            return Err(err("deadline_ms: must be greater than 0".into()));
        }
        if raw.sync.missing_runs == 0 {
            return Err(err("sync.missing_runs: must be at least 1".into()));
        }
        if raw.sync.max_deactivate_percent > 100 {
            return Err(err("sync.max_deactivate_percent: must be 0 to 100".into()));
        }
        Ok(Config {
            ldap,
            attribute_mapping,
            default_template: raw.default_template.filter(|t| !t.trim().is_empty()),
            login_provisioning: raw.login_provisioning.unwrap_or(true),
            deadline: Duration::from_millis(raw.deadline_ms),
            database,
            dovecot: raw.dovecot,
            log: raw.log,
            sync: raw.sync,
            from_mailcow: local_ldap,
            redis,
            serve: raw.serve,
            warnings,
        })
    }
}

/// Reads a file only root or the effective user can change (see [`file_trust`]): whoever can
/// rewrite the configuration, a secret or the CA decides who logs in.
fn read_trusted(path: &Path) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    file_trust::check_read_only_for_others(path, &file)?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text)
}

fn readable_by_others(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o004 != 0)
        .unwrap_or(false)
}

/// Exactly one of an inline secret and a file holding it; the file's last newline is dropped.
fn secret(
    inline: Option<SecretString>,
    file: Option<PathBuf>,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<SecretString, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("{key} and {key}_file: set only one")),
        (Some(s), None) => Ok(s),
        (None, Some(file)) => secret_file(&file, &format!("{key}_file"), warnings),
        (None, None) => Err(format!("{key}: missing (set {key} or {key}_file)")),
    }
}

/// A secret kept in `file` (named `key` in errors), read with the trust checks of the
/// configuration; its last newline is dropped.
pub(crate) fn secret_file(
    file: &Path,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<SecretString, String> {
    let text = zeroize::Zeroizing::new(read_trusted(file).map_err(|e| format!("{key}: {e}"))?);
    if readable_by_others(file) {
        warnings.push(format!(
            "{} ({key}) is readable by other users; chmod o-r it",
            file.display()
        ));
    }
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(SecretString::from(trimmed.to_owned()))
}

/// An LDAP attribute description: a name (letters, digits, '-') or a numeric OID.
fn valid_attribute_name(name: &str) -> bool {
    let name_like = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid_like = !name.is_empty()
        && name
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    name_like || oid_like
}

fn validate_ldap(raw: RawLdap, warnings: &mut Vec<String>) -> Result<LdapConfig, String> {
    let hosts: Vec<String> = match raw.hosts {
        Some(HostList::List(list)) => list,
        Some(HostList::CommaSeparated(s)) => s.split(',').map(str::to_owned).collect(),
        None => Vec::new(),
    }
    .into_iter()
    .map(|h| h.trim().to_owned())
    .filter(|h| !h.is_empty())
    .collect();
    if hosts.is_empty() {
        return Err("ldap.hosts: at least one host is required".into());
    }
    if let Some(bad) = hosts.iter().find(|h| h.contains("://") || h.contains('/')) {
        return Err(format!(
            "ldap.hosts: '{bad}' must be a bare host name or IP (use ldap.port, ldap.use_ssl, ldap.use_tls)"
        ));
    }
    let (use_ssl, use_tls) = (raw.use_ssl.unwrap_or(false), raw.use_tls.unwrap_or(false));
    let transport = match (use_ssl, use_tls) {
        (true, true) => {
            return Err("ldap.use_ssl and ldap.use_tls: choose one (LDAPS or StartTLS)".into());
        }
        (true, false) => Transport::Ldaps,
        (false, true) => Transport::StartTls,
        (false, false) => Transport::Plain,
    };
    let port = match (raw.port, transport) {
        (None | Some(389), Transport::Ldaps) => 636,
        (None, _) => 389,
        (Some(0), _) => return Err("ldap.port: must not be 0".into()),
        (Some(p), _) => p,
    };
    if let Some(ca) = &raw.ca_file {
        if transport == Transport::Plain {
            warnings.push("ldap.ca_file is set but neither use_ssl nor use_tls is on: the connection is not encrypted".into());
        }
        read_trusted(ca).map_err(|e| format!("ldap.ca_file: {e}"))?;
    }
    if raw.ca_only && raw.ca_file.is_none() {
        return Err("ldap.ca_only: needs ldap.ca_file (the only CA it trusts)".into());
    }
    let base_dn = raw.base_dn.unwrap_or_default();
    if base_dn.trim().is_empty() {
        return Err("ldap.base_dn: must not be empty".into());
    }
    let bind_dn = raw.bind_dn.unwrap_or_default();
    if bind_dn.trim().is_empty() {
        return Err("ldap.bind_dn: must not be empty (anonymous binds are not supported)".into());
    }
    let username_field = raw.username_field.unwrap_or_else(|| "mail".into());
    for (key, value) in [
        ("ldap.username_field", Some(&username_field)),
        ("ldap.name_field", Some(&raw.name_field)),
        ("ldap.attribute_field", raw.attribute_field.as_ref()),
    ] {
        if let Some(v) = value {
            if !valid_attribute_name(v) {
                return Err(format!("{key}: '{v}' is not an LDAP attribute name"));
            }
        }
    }
    let filter = raw
        .filter
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty());
    if let Some(f) = &filter {
        crate::ldap::filter::validate_admin_filter(f).map_err(|e| format!("ldap.filter: {e}"))?;
    }
    if raw.connect_timeout_ms == 0 || raw.timeout_ms == 0 {
        return Err("ldap.connect_timeout_ms and ldap.timeout_ms: must be greater than 0".into());
    }
    let bind_password = secret(
        raw.bind_password,
        raw.bind_password_file,
        "ldap.bind_password",
        warnings,
    )?;
    if bind_password.expose_secret().is_empty() {
        return Err(
            "ldap.bind_password: empty (a simple bind without a password is an anonymous bind)"
                .into(),
        );
    }
    if transport != Transport::Plain {
        if let Some(ip6) = hosts
            .iter()
            .find(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
        {
            return Err(format!(
                "ldap.hosts: '{ip6}': with TLS use a host name or an IPv4 address (the certificate check cannot use an IPv6 literal)"
            ));
        }
    }
    Ok(LdapConfig {
        hosts,
        port,
        transport,
        ignore_ssl_errors: raw.ignore_ssl_errors.unwrap_or(false),
        ca_file: raw.ca_file,
        ca_only: raw.ca_only,
        base_dn,
        username_field,
        filter,
        attribute_field: raw.attribute_field.filter(|a| !a.is_empty()),
        name_field: raw.name_field,
        bind_dn,
        bind_password,
        connect_timeout: Duration::from_millis(raw.connect_timeout_ms),
        timeout: Duration::from_millis(raw.timeout_ms),
    })
}

fn validate_database(
    raw: RawDatabase,
    warnings: &mut Vec<String>,
) -> Result<DatabaseConfig, String> {
    let address = match (raw.socket, raw.host) {
        (Some(_), Some(_)) => return Err("database.socket and database.host: set only one".into()),
        (Some(socket), None) => DatabaseAddress::Socket(socket),
        (None, Some(host)) => DatabaseAddress::Tcp {
            host,
            port: raw.port.unwrap_or(3306),
        },
        (None, None) => return Err("database: set socket or host".into()),
    };
    if raw.name.is_empty() || raw.user.is_empty() {
        return Err("database.name and database.user: must not be empty".into());
    }
    if raw.timeout_ms == 0 {
        return Err("database.timeout_ms: must be greater than 0".into());
    }
    let password = secret(
        raw.password,
        raw.password_file,
        "database.password",
        warnings,
    )?;
    Ok(DatabaseConfig {
        address,
        name: raw.name,
        user: raw.user,
        password,
        timeout: Duration::from_millis(raw.timeout_ms),
    })
}

fn validate_userdb_fields(fields: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in fields {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "dovecot.userdb_fields: '{name}' is not a field name (letters, digits, _)"
            ));
        }
        if value.contains(['\t', '\n', '\r', '\0']) {
            return Err(format!(
                "dovecot.userdb_fields.{name}: tabs and line breaks are not allowed"
            ));
        }
        for piece in pieces(value).map_err(|e| format!("dovecot.userdb_fields.{name}: {e}"))? {
            if let Piece::Placeholder(p) = piece {
                if !USERDB_PLACEHOLDERS.contains(&p) {
                    return Err(format!(
                        "dovecot.userdb_fields.{name}: unknown placeholder {{{p}}} (known: {{username}}, {{local_part}}, {{domain}})"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A userdb field value split into literal text and `{placeholder}`s.
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

fn pieces(value: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            return Err("unclosed '{'".into());
        };
        pieces.push(Piece::Text(&rest[..start]));
        pieces.push(Piece::Placeholder(&rest[start + 1..start + len]));
        rest = &rest[start + len + 1..];
    }
    pieces.push(Piece::Text(rest));
    Ok(pieces)
}

impl DovecotConfig {
    /// The userdb fields with their placeholders filled in for one mailbox. One pass, so a value holding a placeholder's text is not
    /// expanded again. Fields are paths (home, mail): a value with a '/', or one that is '.',
    /// '..' or empty, could put one mailbox's directory inside another's and is refused.
    pub(crate) fn expand_userdb_fields(
        &self,
        username: &str,
        local_part: &str,
        domain: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut expanded = BTreeMap::new();
        for (name, template) in &self.userdb_fields {
            let mut value = String::new();
            // validated when the configuration was loaded
            for piece in pieces(template).unwrap_or_default() {
                match piece {
                    Piece::Text(text) => value.push_str(text),
                    Piece::Placeholder(p) => {
                        let v = match p {
                            "username" => username,
                            "local_part" => local_part,
                            _ => domain,
                        };
                        if v.contains('/') || matches!(v, "" | "." | "..") {
                            return Err(format!(
                                "{{{p}}} '{v}' cannot go into dovecot.userdb_fields.{name}: a '/', '.' or '..' would put the mailbox's files where another's are"
                            ));
                        }
                        value.push_str(v);
                    }
                }
            }
            expanded.insert(name.clone(), value);
        }
        Ok(expanded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MINIMAL: &str = "
ldap:
  hosts: ldap1.example.org, ldap2.example.org
  base_dn: ou=people,dc=example,dc=org
  bind_dn: cn=svc,dc=example,dc=org
  bind_password: secret
database:
  socket: /run/mysqld/mysqld.sock
  name: mailcow
  user: mailcow
  password: secret
";

    fn load(text: &str) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o600)).unwrap();
        Config::load(file.path())
    }

    #[test]
    fn userdb_fields_expand_in_one_pass_and_refuse_path_escapes() {
        let mut dovecot = DovecotConfig::default();
        dovecot
            .userdb_fields
            .insert("home".into(), "/var/vmail/{domain}/{local_part}".into());
        dovecot
            .userdb_fields
            .insert("user".into(), "{username}".into());
        let expand = |dovecot: &DovecotConfig, local: &str| {
            dovecot.expand_userdb_fields(&format!("{local}@example.org"), local, "example.org")
        };
        let fields = expand(&dovecot, "bob").unwrap();
        assert_eq!(fields["home"], "/var/vmail/example.org/bob");
        assert_eq!(fields["user"], "bob@example.org");
        // placeholder text in a name is data, not expanded again
        assert_eq!(
            expand(&dovecot, "{domain}").unwrap()["home"],
            "/var/vmail/example.org/{domain}"
        );
        for bad in ["bob/inbox", "..", ".", "", "/x"] {
            let e = expand(&dovecot, bad).unwrap_err();
            assert!(
                e.contains("cannot go into dovecot.userdb_fields."),
                "{bad}: {e}"
            );
        }
        // fields without placeholders never refuse
        dovecot.userdb_fields.clear();
        dovecot.userdb_fields.insert("uid".into(), "5000".into());
        assert!(expand(&dovecot, "bob/inbox").is_ok());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.ldap.hosts, ["ldap1.example.org", "ldap2.example.org"]);
        assert_eq!(c.ldap.port, 389);
        assert_eq!(c.ldap.transport, Transport::Plain);
        assert_eq!(c.ldap.username_field, "mail");
        assert_eq!(c.ldap.name_field, "displayName");
        assert!(c.login_provisioning);
        assert_eq!(c.deadline, Duration::from_secs(10));
        assert_eq!(c.database.timeout, Duration::from_secs(5));
        assert!(!c.ldap.ca_only);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn ldaps_moves_port_389_to_636() {
        let c =
            load(&MINIMAL.replace("  base_dn", "  use_ssl: true\n  port: 389\n  base_dn")).unwrap();
        assert_eq!((c.ldap.transport, c.ldap.port), (Transport::Ldaps, 636));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                MINIMAL.replace("  base_dn", "  use_ssl: true\n  use_tls: true\n  base_dn"),
                "use_ssl",
            ),
            (
                MINIMAL.replace("  base_dn", "  colour: blue\n  base_dn"),
                "colour",
            ),
            (
                MINIMAL.replace("  base_dn", "  filter: \"(objectClass=\"\n  base_dn"),
                "ldap.filter",
            ),
            (
                MINIMAL.replace("  bind_password: secret\n", ""),
                "ldap.bind_password",
            ),
            (
                MINIMAL.replace("  password: secret\n", ""),
                "database.password",
            ),
            (
                format!("{MINIMAL}dovecot:\n  userdb_fields: {{ home: \"/x/{{user}}\" }}\n"),
                "{user}",
            ),
            (
                MINIMAL.replace("bind_password: secret", "bind_password: 987654"),
                "quoted string",
            ),
            (
                MINIMAL.replace("bind_password: secret", "bind_password: \"\""),
                "anonymous bind",
            ),
            (
                MINIMAL.replace(
                    "hosts: ldap1.example.org, ldap2.example.org",
                    "hosts: [\"::1\"]\n  use_tls: true",
                ),
                "IPv6",
            ),
            (
                MINIMAL.replace("  base_dn", "  ca_only: true\n  base_dn"),
                "ldap.ca_only: needs ldap.ca_file",
            ),
            (
                format!("{MINIMAL}serve:\n  mailcow_settings_refresh_s: 0\n"),
                "serve.mailcow_settings_refresh_s: must be greater than 0",
            ),
            (
                format!("{MINIMAL}serve:\n  change_poll_ms: 5\n"),
                "serve.change_poll_ms: must be 0 (off) or 10 to 1000",
            ),
            (
                format!("{MINIMAL}serve:\n  change_poll_ms: 1001\n"),
                "serve.change_poll_ms: must be 0 (off) or 10 to 1000",
            ),
        ];
        for (text, key) in cases {
            let e = load(&text).unwrap_err().to_string();
            assert!(e.contains(key), "{e:?} should name {key}");
            assert!(!e.contains('\n'), "one line: {e:?}");
            assert!(!e.contains("987654"), "no secret in errors: {e:?}");
        }
    }

    #[test]
    fn from_mailcow_keeps_only_what_mailcow_has_no_field_for() {
        let database = &MINIMAL[MINIMAL.find("database:").unwrap()..];
        let c = load(&format!(
            "ldap:\n  from_mailcow: true\n  timeout_ms: 700\n{database}"
        ))
        .unwrap();
        assert!(c.reads_mailcow_settings());
        assert!(
            c.ldap.hosts.is_empty(),
            "a placeholder until the table is read"
        );
        assert_eq!(c.ldap.timeout, Duration::from_millis(700));
        for (extra, key) in [
            ("  base_dn: dc=x\n", "ldap.base_dn"),
            (
                "  bind_password_file: /nonexistent\n",
                "ldap.bind_password_file",
            ),
            ("  use_ssl: false\n", "ldap.use_ssl"),
        ] {
            let e = load(&format!("ldap:\n  from_mailcow: true\n{extra}{database}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("{key}: ldap.from_mailcow is on")),
                "{e}"
            );
        }
        let e = load(&format!(
            "ldap:\n  from_mailcow: true\nlogin_provisioning: false\n{database}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("login_provisioning: ldap.from_mailcow is on"),
            "{e}"
        );
    }

    #[test]
    fn redis_section_errors_name_the_key() {
        for (section, key) in [
            (
                "redis:\n  host: r\n  socket: /s\n",
                "redis.socket and redis.host",
            ),
            ("redis:\n  port: 1\n", "redis: set host or socket"),
            ("redis:\n  host: r\n  password: 1234\n", "quoted string"),
            ("redis:\n  host: r\n  timeout_ms: 0\n", "redis.timeout_ms"),
        ] {
            let e = load(&format!("{MINIMAL}{section}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e:?} should name {key}");
        }
        let c = load(&format!("{MINIMAL}redis:\n  host: redis-mailcow\n")).unwrap();
        let redis = c.redis.unwrap();
        assert!(
            matches!(redis.address, RedisAddress::Tcp { ref host, port: 6379 } if host == "redis-mailcow")
        );
        assert!(redis.password.is_none());
    }

    #[test]
    fn world_readable_secret_warns() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(MINIMAL.as_bytes()).unwrap();
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let c = Config::load(file.path()).unwrap();
        assert!(c.warnings[0].contains("readable by other users"));
    }
}
