//! mailcow's UI as the tests play it: the `identity_provider` rows its LDAP settings page
//! saves, the app password hashes it writes, and a config file that leaves those settings to them (`ldap.from_mailcow`).

use super::{SVC_DN, SVC_PW, TestEnv, slapd};
use serde_json::{Value, json};

/// `cfg` without what mailcow's table holds, `ldap.from_mailcow` on.
pub fn config_from_mailcow(cfg: &mut Value) {
    let file = cfg.as_object_mut().unwrap();
    for key in [
        "attribute_mapping",
        "default_template",
        "login_provisioning",
    ] {
        file.remove(key);
    }
    cfg["ldap"] = json!({
        "from_mailcow": true,
        "name_field": "displayName",
        "connect_timeout_ms": 1000,
        "timeout_ms": 2000
    });
}

/// The rows mailcow's `identity_provider('edit')` writes for an LDAP provider (values as PHP
/// stores them: booleans "1"/"", lower-cased field names), `mappers`/`templates` as given.
pub fn save_as_mailcow_ui(env: &TestEnv, mappers: &str, templates: &str, extra: &[(&str, &str)]) {
    let port = slapd().port.to_string();
    let mut rows = vec![
        ("authsource", "ldap"),
        ("host", "127.0.0.1"),
        ("port", port.as_str()),
        ("basedn", env.ldap.dn.as_str()),
        ("username_field", "mail"),
        ("filter", "(objectClass=inetOrgPerson)"),
        ("attribute_field", "employeetype"),
        ("binddn", SVC_DN),
        ("bindpass", SVC_PW),
        ("periodic_sync", "0"),
        ("import_users", "0"),
        ("sync_interval", "15"),
        ("use_ssl", ""),
        ("use_tls", ""),
        ("ignore_ssl_error", ""),
        ("login_provisioning", "1"),
        ("default_template", "Default"),
        ("mappers", mappers),
        ("templates", templates),
        ("access_token", ""),
    ];
    rows.extend_from_slice(extra);
    for (key, value) in rows {
        env.db.exec_with(
            "INSERT INTO identity_provider (`key`, `value`) VALUES (?, ?) \
             ON DUPLICATE KEY UPDATE `value` = VALUES(`value`)",
            (key, value),
        );
    }
}

/// A hash from tests/fixtures/app_password_hashes.json (made by doveadm or PHP) and its password.
pub fn app_password_vector(made_with: &str) -> (String, String) {
    let text = include_str!("../fixtures/app_password_hashes.json");
    let doc: serde_json::Value = serde_json::from_str(text).expect("fixture");
    let v = doc["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| v["made_with"].as_str().unwrap().starts_with(made_with))
        .unwrap_or_else(|| panic!("no vector made with {made_with}"));
    (
        v["hash"].as_str().unwrap().to_owned(),
        v["password"].as_str().unwrap().to_owned(),
    )
}
