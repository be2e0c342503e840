//! `ldap.from_mailcow`: the LDAP settings and the attribute mapping as mailcow's UI stores them
//! in its `identity_provider` table (key/value rows), read per use (per login; `serve`: at start,
//! then periodically) and validated exactly as the same settings in the file are. The file then
//! keeps only what mailcow has no field for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{
    Config, ConfigError, HostList, LdapConfig, Mapping, RawConfig, RawLdap, Transport,
    validate_ldap,
};

/// The `identity_provider` rows read: key → value as stored (`bindpass` is a secret).
pub(crate) type IdpRows = BTreeMap<String, Zeroizing<String>>;

/// The keys read from `identity_provider` (never OIDC leftovers such as `client_secret`); a
/// unit test holds the store's statement to them.
#[cfg(test)]
pub(crate) const IDP_KEYS: [&str; 16] = [
    "authsource",
    "host",
    "port",
    "basedn",
    "username_field",
    "filter",
    "attribute_field",
    "binddn",
    "bindpass",
    "use_ssl",
    "use_tls",
    "ignore_ssl_error",
    "login_provisioning",
    "default_template",
    "mappers",
    "templates",
];

/// Each setting mailcow owns: its key in the file, its key in `identity_provider`.
const MAILCOW_OWNED: [(&str, &str); 15] = [
    ("ldap.hosts", "host"),
    ("ldap.port", "port"),
    ("ldap.use_ssl", "use_ssl"),
    ("ldap.use_tls", "use_tls"),
    ("ldap.ignore_ssl_errors", "ignore_ssl_error"),
    ("ldap.base_dn", "basedn"),
    ("ldap.username_field", "username_field"),
    ("ldap.filter", "filter"),
    ("ldap.attribute_field", "attribute_field"),
    ("ldap.bind_dn", "binddn"),
    ("ldap.bind_password", "bindpass"),
    ("ldap.bind_password_file", "bindpass"),
    ("attribute_mapping", "mappers, templates"),
    ("default_template", "default_template"),
    ("login_provisioning", "login_provisioning"),
];

/// The keys of the attribute mapping and provisioning: the rest decides the LDAP connections.
const MAPPING_KEYS: [&str; 4] = [
    "mappers",
    "templates",
    "default_template",
    "login_provisioning",
];

/// The settings kept in the file: the LDAP settings mailcow has no field for.
const FILE_OWNED: [&str; 5] = [
    "ldap.ca_file",
    "ldap.ca_only",
    "ldap.name_field",
    "ldap.connect_timeout_ms",
    "ldap.timeout_ms",
];

/// How errors name the table.
const TABLE: &str = "mailcow's identity_provider table";

/// What the file says about LDAP when mailcow holds the rest.
#[derive(Debug, Clone)]
pub struct LocalLdap {
    ca_file: Option<PathBuf>,
    ca_only: bool,
    name_field: String,
    connect_timeout_ms: u64,
    timeout_ms: u64,
    /// The LDAP settings and the mapping have been filled in from the table.
    completed: bool,
}

/// Where a setting in use came from (`test-connection` prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SettingOrigin {
    File,
    /// The `identity_provider` key(s).
    Mailcow(&'static str),
}

/// With `ldap.from_mailcow`, a setting mailcow owns must not be in the file too: which one
/// counts would be a guess.
pub(super) fn refuse_duplicates(raw: &RawConfig) -> Result<(), String> {
    let l = &raw.ldap;
    let present = [
        l.hosts.is_some(),
        l.port.is_some(),
        l.use_ssl.is_some(),
        l.use_tls.is_some(),
        l.ignore_ssl_errors.is_some(),
        l.base_dn.is_some(),
        l.username_field.is_some(),
        l.filter.is_some(),
        l.attribute_field.is_some(),
        l.bind_dn.is_some(),
        l.bind_password.is_some(),
        l.bind_password_file.is_some(),
        raw.attribute_mapping.is_some(),
        raw.default_template.is_some(),
        raw.login_provisioning.is_some(),
    ];
    match MAILCOW_OWNED.iter().zip(present).find(|(_, set)| *set) {
        Some(((key, column), _)) => Err(format!(
            "{key}: ldap.from_mailcow is on, so this comes from mailcow's UI \
             (identity_provider.{column}); remove it from the file"
        )),
        None => Ok(()),
    }
}

impl LocalLdap {
    pub(super) fn from_raw(raw: RawLdap) -> LocalLdap {
        LocalLdap {
            ca_file: raw.ca_file,
            ca_only: raw.ca_only,
            name_field: raw.name_field,
            connect_timeout_ms: raw.connect_timeout_ms,
            timeout_ms: raw.timeout_ms,
            completed: false,
        }
    }

    /// Stands in for the LDAP settings until the table is read: no host, so nothing can use
    /// it by mistake.
    pub(super) fn placeholder(&self) -> LdapConfig {
        LdapConfig {
            hosts: Vec::new(),
            port: 389,
            transport: Transport::Plain,
            ignore_ssl_errors: false,
            ca_file: self.ca_file.clone(),
            ca_only: self.ca_only,
            base_dn: String::new(),
            username_field: "mail".into(),
            filter: None,
            attribute_field: None,
            name_field: self.name_field.clone(),
            bind_dn: String::new(),
            bind_password: SecretString::from(String::new()),
            connect_timeout: std::time::Duration::from_millis(self.connect_timeout_ms),
            timeout: std::time::Duration::from_millis(self.timeout_ms),
        }
    }
}

impl Config {
    /// Whether the LDAP settings must be read from mailcow's table before use (with
    /// `ldap.from_mailcow`, until [`Config::with_mailcow_settings`] filled them in).
    pub(crate) fn reads_mailcow_settings(&self) -> bool {
        self.from_mailcow.as_ref().is_some_and(|l| !l.completed)
    }

    /// This configuration with the LDAP settings and the attribute mapping of mailcow's
    /// `identity_provider` rows (itself, unchanged, without `ldap.from_mailcow`). No LDAP
    /// provider in the table, or settings this program would refuse in the file, are a
    /// configuration error.
    pub(crate) fn with_mailcow_settings(&self, rows: &IdpRows) -> Result<Config, ConfigError> {
        let mut config = self.clone();
        let Some(local) = &self.from_mailcow else {
            return Ok(config);
        };
        config.from_mailcow = Some(LocalLdap {
            completed: true,
            ..local.clone()
        });
        let err = |message: String| ConfigError::new(Path::new(TABLE), message);
        let get = |key: &str| rows.get(key).map(|v| v.as_str());
        match get("authsource") {
            Some("ldap") => {}
            other => {
                return Err(err(format!(
                    "no LDAP identity provider configured in mailcow (authsource {}); \
                     set it up in mailcow's UI or turn ldap.from_mailcow off",
                    other.map_or_else(|| "missing".to_owned(), |a| format!("'{a}'"))
                )));
            }
        }
        let use_ssl = php_bool(get("use_ssl"));
        let port = match get("port").map(str::trim).filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| err(format!("port: '{p}' is not a port number")))?,
            ),
        };
        let lower = |key: &str| get(key).map(str::to_lowercase).filter(|v| !v.is_empty());
        let raw = RawLdap {
            from_mailcow: false,
            hosts: Some(HostList::CommaSeparated(
                get("host").unwrap_or_default().replace(' ', ""),
            )),
            port,
            use_ssl: Some(use_ssl),
            // mailcow stores StartTLS off when LDAPS is on; a hand-edited row is read so too.
            use_tls: Some(php_bool(get("use_tls")) && !use_ssl),
            ignore_ssl_errors: Some(php_bool(get("ignore_ssl_error"))),
            ca_file: local.ca_file.clone(),
            ca_only: local.ca_only,
            base_dn: get("basedn").map(str::to_owned),
            username_field: Some(lower("username_field").unwrap_or_else(|| "mail".into())),
            filter: get("filter").map(str::to_owned),
            attribute_field: lower("attribute_field"),
            name_field: local.name_field.clone(),
            bind_dn: get("binddn").map(str::to_owned),
            bind_password: Some(SecretString::from(
                get("bindpass").unwrap_or_default().to_owned(),
            )),
            bind_password_file: None,
            connect_timeout_ms: local.connect_timeout_ms,
            timeout_ms: local.timeout_ms,
        };
        config.ldap =
            validate_ldap(raw, &mut config.warnings).map_err(|e| err(with_table_key(&e)))?;
        config.attribute_mapping = mapping(get("mappers"), get("templates")).map_err(err)?;
        config.default_template = get("default_template")
            .map(str::to_owned)
            .filter(|t| !t.trim().is_empty());
        // mailcow's reader: no row means on.
        config.login_provisioning = get("login_provisioning").is_none_or(|v| php_bool(Some(v)));
        Ok(config)
    }

    /// Each LDAP and mapping setting in use, and where it came from.
    pub(crate) fn setting_origins(&self) -> Vec<(&'static str, SettingOrigin)> {
        let owned = MAILCOW_OWNED
            .iter()
            .filter(|(key, _)| *key != "ldap.bind_password_file")
            .map(|(key, column)| {
                let origin = if self.from_mailcow.is_some() {
                    SettingOrigin::Mailcow(column)
                } else {
                    SettingOrigin::File
                };
                (*key, origin)
            });
        owned
            .chain(FILE_OWNED.iter().map(|key| (*key, SettingOrigin::File)))
            .collect()
    }
}

/// Whether two readings of the table give the same LDAP connections (they may differ in the
/// mapping): `serve` then keeps its pooled connections.
pub(crate) fn same_connections(a: &IdpRows, b: &IdpRows) -> bool {
    fn connection(rows: &IdpRows) -> impl Iterator<Item = (&String, &Zeroizing<String>)> {
        rows.iter()
            .filter(|(key, _)| !MAPPING_KEYS.contains(&key.as_str()))
    }
    connection(a).eq(connection(b))
}

/// PHP's `(bool)` of a stored string: false for a missing row, "" and "0".
fn php_bool(value: Option<&str>) -> bool {
    !matches!(value, None | Some("") | Some("0"))
}

/// A validation message naming the table's key beside the file's.
fn with_table_key(message: &str) -> String {
    MAILCOW_OWNED
        .iter()
        .find(|(key, _)| message.starts_with(&format!("{key}:")))
        .map_or_else(
            || message.to_owned(),
            |(key, column)| format!("{column} ({key}){}", &message[key.len()..]),
        )
}

/// `mappers` and `templates` as mailcow stores them: JSON arrays, or objects keyed by index when
/// the PHP array had gaps. The n-th mapper maps to the template of the same index; entries
/// without an attribute or a template map nothing.
fn mapping(mappers: Option<&str>, templates: Option<&str>) -> Result<Vec<Mapping>, String> {
    let mappers = indexed(mappers, "mappers")?;
    let templates = indexed(templates, "templates")?;
    Ok(mappers
        .into_iter()
        .filter(|(_, attribute)| !attribute.is_empty())
        .filter_map(|(index, attribute)| {
            let (_, template) = templates.iter().find(|(i, _)| *i == index)?;
            (!template.trim().is_empty()).then(|| Mapping {
                attribute,
                template: template.clone(),
            })
        })
        .collect())
}

/// A JSON array or index-keyed object of strings as (index, value) pairs, in stored order.
fn indexed(text: Option<&str>, key: &str) -> Result<Vec<(String, String)>, String> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let value: Value = serde_json::from_str(text).map_err(|e| format!("{key}: not JSON ({e})"))?;
    let entries: Vec<(String, &Value)> = match &value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Null => Vec::new(),
        _ => return Err(format!("{key}: neither a JSON array nor an object")),
    };
    entries
        .into_iter()
        .map(|(index, v)| match v {
            Value::String(s) => Ok((index, s.clone())),
            Value::Number(n) => Ok((index, n.to_string())),
            _ => Err(format!("{key}[{index}]: not a string")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(m: &[Mapping]) -> Vec<(&str, &str)> {
        m.iter()
            .map(|m| (m.attribute.as_str(), m.template.as_str()))
            .collect()
    }

    #[test]
    fn mappers_as_array_or_index_keyed_object() {
        let m = mapping(Some(r#"["staff","admins"]"#), Some(r#"["Staff","Admins"]"#)).unwrap();
        assert_eq!(pairs(&m), [("staff", "Staff"), ("admins", "Admins")]);
        // PHP kept the indices after removing an empty first entry
        let m = mapping(
            Some(r#"{"1":"admins","2":"staff"}"#),
            Some(r#"{"1":"Admins","2":"Staff"}"#),
        )
        .unwrap();
        assert_eq!(pairs(&m), [("admins", "Admins"), ("staff", "Staff")]);
        // pairs by index, not by position
        let m = mapping(Some(r#"{"1":"admins"}"#), Some(r#"["Unused","Admins"]"#)).unwrap();
        assert_eq!(pairs(&m), [("admins", "Admins")]);
        assert!(mapping(None, None).unwrap().is_empty());
        assert!(mapping(Some("[]"), Some("[]")).unwrap().is_empty());
        assert!(mapping(Some(r#"["a"]"#), None).unwrap().is_empty());
        assert!(
            mapping(Some("{"), Some("[]"))
                .unwrap_err()
                .contains("mappers")
        );
        assert!(
            mapping(Some("[[1]]"), Some("[]"))
                .unwrap_err()
                .contains("mappers[0]")
        );
    }

    #[test]
    fn only_a_change_outside_the_mapping_needs_new_connections() {
        let rows = |pairs: &[(&str, &str)]| -> IdpRows {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Zeroizing::new(v.to_string())))
                .collect()
        };
        let base = rows(&[("host", "a"), ("mappers", "[]"), ("bindpass", "x")]);
        let mapping = rows(&[
            ("host", "a"),
            ("mappers", r#"["staff"]"#),
            ("bindpass", "x"),
        ]);
        let password = rows(&[("host", "a"), ("mappers", "[]"), ("bindpass", "y")]);
        let fewer = rows(&[("host", "a"), ("mappers", "[]")]);
        assert!(same_connections(&base, &mapping));
        assert!(!same_connections(&base, &password));
        assert!(!same_connections(&base, &fewer));
    }

    #[test]
    fn php_booleans() {
        assert!(php_bool(Some("1")));
        assert!(php_bool(Some("true")));
        assert!(!php_bool(Some("")));
        assert!(!php_bool(Some("0")));
        assert!(!php_bool(None));
    }

    #[test]
    fn validation_messages_name_the_table_key() {
        assert_eq!(
            with_table_key("ldap.base_dn: must not be empty"),
            "basedn (ldap.base_dn): must not be empty"
        );
        assert_eq!(with_table_key("other"), "other");
    }
}
