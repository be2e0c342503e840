//! The files and names the program trusts, through the real binary against a throwaway slapd and
//! MariaDB: secrets in files, configuration and secret files another user could change, and
//! mailbox names that would escape their directory in a userdb path.
mod common;

use common::*;
use serde_json::json;

const PW: &str = "Files-Pw-1";

/// alice@example.org: LDAP entry, active domain, active LDAP-backed mailbox.
fn alice_env() -> TestEnv {
    let env = TestEnv::new(&[LdapUser::new("alice", "alice@example.org", PW)]);
    env.db.add_domain(&Domain::new("example.org"));
    env.db.add_mailbox(&Mailbox::new("alice@example.org"));
    env
}

// ---------------------------------------------------------------------------------------------
// Secrets in files, files others could change
// ---------------------------------------------------------------------------------------------

#[test]
fn secret_files_work_and_world_readable_ones_warn() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = alice_env();
    let dir = tempfile::Builder::new()
        .prefix("secrets.")
        .tempdir_in(common::process::scratch())
        .unwrap();
    let ldap_pw = dir.path().join("ldap.pw");
    let db_pw = dir.path().join("db.pw");
    // a trailing newline, as `echo pw > file` leaves it
    std::fs::write(&ldap_pw, format!("{SVC_PW}\n")).unwrap();
    std::fs::write(&db_pw, format!("{}\n", env.db.password)).unwrap();
    for p in [&ldap_pw, &db_pw] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let ldap = env.cfg["ldap"].as_object_mut().unwrap();
    ldap.remove("bind_password");
    ldap.insert("bind_password_file".into(), json!(ldap_pw));
    let db = env.cfg["database"].as_object_mut().unwrap();
    db.remove("password");
    db.insert("password_file".into(), json!(db_pw));
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(0)
        .assert_never_printed(SVC_PW)
        .assert_never_printed(&env.db.password);
    assert!(
        !out.stderr.contains(&ldap_pw.display().to_string()),
        "warning about a 0600 secret file:\n{out}"
    );
    // readable by others: still works, but a warning names the file
    std::fs::set_permissions(&ldap_pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(0)
        .assert_stderr_contains(&ldap_pw.display().to_string())
        .assert_never_printed(SVC_PW);
}

#[test]
fn config_and_secret_files_others_could_change_are_a_tempfail() {
    use std::os::unix::fs::{PermissionsExt, chown};
    let chmod = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let mut env = alice_env();
    let top = tempfile::Builder::new()
        .prefix("perm.")
        .tempdir_in(common::process::scratch())
        .unwrap();
    let dir = top.path().join("etc");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    let config = dir.join("config.yml");
    let run = env.cp().login("alice@example.org", PW);
    let login = |config: &std::path::Path| run.clone().config_file(config.to_str().unwrap()).run();
    let write_config = |cfg: &serde_json::Value| {
        std::fs::write(&config, serde_norway::to_string(cfg).unwrap()).unwrap();
        chmod(&config, 0o640);
    };
    write_config(&env.cfg);
    login(&config).assert_code(0);

    chmod(&config, 0o660);
    login(&config).assert_code(111).assert_stderr_contains(&format!(
        "result=tempfail reason=\"configuration error in {0}: {0} is writable by group/others (mode 0660): chmod go-w it\"",
        config.display()
    ));
    chmod(&config, 0o640);
    chown(&config, Some(65534), None).unwrap();
    login(&config)
        .assert_code(111)
        .assert_stderr_contains(&format!(
            "{} is owned by uid 65534, neither root nor this user (uid 0)",
            config.display()
        ));
    chown(&config, Some(0), None).unwrap();
    chmod(&dir, 0o775);
    login(&config).assert_code(111).assert_stderr_contains(&format!(
        "{} is writable by group/others (mode 0775): chmod go-w it, or move the file, a directory above {}",
        dir.display(),
        config.display()
    ));
    // sticky and root's, like /tmp: others cannot replace a file they do not own
    chmod(&dir, 0o1777);
    login(&config).assert_code(0);
    chmod(&dir, 0o755);

    // a secret file, the same rules
    let secret = dir.join("ldap.pw");
    std::fs::write(&secret, format!("{SVC_PW}\n")).unwrap();
    chmod(&secret, 0o620);
    let ldap = env.cfg["ldap"].as_object_mut().unwrap();
    ldap.remove("bind_password");
    ldap.insert("bind_password_file".into(), json!(secret));
    write_config(&env.cfg);
    login(&config)
        .assert_code(111)
        .assert_stderr_contains(&format!(
            "ldap.bind_password_file: {} is writable by group/others (mode 0620)",
            secret.display()
        ))
        .assert_never_printed(SVC_PW);
    chmod(&secret, 0o600);
    login(&config).assert_code(0);
}

// ---------------------------------------------------------------------------------------------
// Names in userdb paths
// ---------------------------------------------------------------------------------------------

#[test]
fn a_slash_in_a_local_part_never_reaches_a_userdb_path() {
    // home is /var/vmail/{domain}/{local_part}: alice/inbox would live inside alice's home
    let env = TestEnv::new(&[
        LdapUser::new("alice", "alice@example.org", PW),
        LdapUser::new("alice-inbox", "alice/inbox@example.org", PW),
        LdapUser::new("braces", "{domain}@example.org", PW),
    ]);
    env.db.add_domain(&Domain::new("example.org"));
    for user in [
        "alice@example.org",
        "alice/inbox@example.org",
        "{domain}@example.org",
    ] {
        env.db.add_mailbox(&Mailbox::new(user));
    }
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(0);
    assert_eq!(
        out.env["userdb_home"], "/var/vmail/example.org/alice",
        "{out}"
    );

    let refused = "{local_part} 'alice/inbox' cannot go into dovecot.userdb_fields.home";
    let out = env.cp().login("alice/inbox@example.org", PW).run();
    out.assert_code(1)
        .assert_stderr_contains(&format!("result=rejected reason=\"{refused}"));
    assert!(out.stdout.is_empty(), "the reply program ran:\n{out}");
    let out = env.cp().lookup("alice/inbox@example.org").run();
    out.assert_code(3)
        .assert_stderr_contains(&format!("result=unknown reason=\"{refused}"));
    assert!(out.stdout.is_empty(), "the reply program ran:\n{out}");

    // a placeholder's text in a name is data, not expanded again
    let out = env.cp().login("{domain}@example.org", PW).run();
    out.assert_code(0);
    assert_eq!(
        out.env["userdb_home"], "/var/vmail/example.org/{domain}",
        "{out}"
    );
}
