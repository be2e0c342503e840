//! mailcow-dockerized's own passdb chain on a real Dovecot 2.3 (issue 11): the three passdb
//! blocks of mailcow's dovecot.conf, verbatim (tests/fixtures/mailcow/dovecot-passdb.conf),
//! running contrib/mailcow/passwd-verify.lua in place of mailcow's script (and mailcow's auth cache settings), which asks a real
//! `serve` (slapd + MariaDB, settings from mailcow's `identity_provider` table) first and a
//! stand-in for mailcow's PHP endpoint for what serve hands on. One Dovecot and one serve for
//! this binary; the steps run in order in one test because the last one stops serve.

mod common;
mod e2e;

/// The Dovecot of this test binary runs mailcow's passdb chain.
const E2E_AUTH: e2e::dovecot::Auth = e2e::dovecot::Auth::Mailcow;

#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::serve::Serve;
use common::*;
use e2e::clients::imap_login;
use e2e::dovecot::{MAILCOW_URL, URL_TRANSPORT, dovecot, share_token_with_dovecot};
use e2e::mailcow_php::MailcowPhp;
use provision_helpers::mailcow_site;
use serde_json::json;

const DOMAIN: &str = "mc.example.org";

#[test]
fn mailcows_passdb_chain_asks_serve_first_and_mailcow_for_the_rest() {
    let (mut env, [anna, bert, cleo, fred]) = mailcow_site(DOMAIN);
    env.cfg["log"] = json!({"syslog": false, "stderr": "all"});
    let mut serve = Serve::start(&env.cfg);
    let token = share_token_with_dovecot(&serve);
    let php = MailcowPhp::start(&[(fred.as_str(), "fred-sql-pw")]);
    URL_TRANSPORT
        .set((format!("http://{}/", serve.addr), token))
        .unwrap();
    MAILCOW_URL.set(php.url.clone()).unwrap();
    let d = dovecot();
    let logs = |serve: &Serve| format!("serve:\n{}\ndovecot:\n{}", serve.log(), d.log());
    let tags = |user: &str| {
        env.db.rows_with(
            "SELECT tag_name FROM tags_mailbox WHERE username = ?",
            (user,),
        )
    };
    let staff = vec![vec![Some("staff".to_owned())]];
    // Dovecot caches each answer as mailcow's does (key %s:%u:%w), here for 1 s: a step
    // that repeats a login waits until its entry has expired (Dovecot counts whole seconds:
    // an entry of second N is expired from second N + 2 on).
    let expire_cache = || std::thread::sleep(std::time::Duration::from_millis(2100));

    // An LDAP user: serve answers (and provisions from the mapped template); mailcow's
    // endpoint is never asked.
    imap_login(d.imap_port, &anna, "anna-pw").assert_selected(&logs(&serve));
    assert!(
        serve.log().contains("mailbox created from template Staff"),
        "{}",
        logs(&serve)
    );
    assert_eq!(tags(&anna), staff);
    let r = imap_login(d.imap_port, &anna, "wrong");
    assert!(r.login.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:#?}");
    assert_eq!(php.requests(), Vec::<serde_json::Value>::new());

    // A mailbox of mailcow's own (authsource mailcow): serve says NEXT, mailcow's endpoint
    // decides, asked with mailcow's request.
    let r = imap_login(d.imap_port, &fred, "fred-sql-pw");
    assert!(r.ok(), "{r:#?}\n{}", logs(&serve));
    let r = imap_login(d.imap_port, &fred, "wrong");
    assert!(r.login.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:#?}");
    let asked = php.requests();
    assert!(!asked.is_empty());
    for request in &asked {
        assert_eq!(request["username"], json!(fred));
        assert_eq!(request["service"], json!("imap"));
        assert_eq!(request["real_rip"], json!("127.0.0.1"));
    }
    assert_eq!(asked[0]["password"], json!("fred-sql-pw"));
    let php_calls = asked.len();

    // The index-keyed mapping (what PHP keeps of ["", "staff"]): bert follows it.
    save_as_mailcow_ui(&env, r#"{"1":"staff"}"#, r#"{"1":"Staff"}"#, &[]);
    serve.reload(); // serve reads mailcow's settings on SIGHUP (or every minute)
    imap_login(d.imap_port, &bert, "bert-pw").assert_selected(&logs(&serve));
    assert_eq!(tags(&bert), staff);

    // An app password of an LDAP mailbox: OK without any LDAP connection (the UI's LDAP
    // server is a black hole meanwhile), sasl_log names it.
    let (hash, app_pw) = app_password_vector("php password_hash(PASSWORD_BCRYPT)");
    let app_password = |imap_access: i32| {
        env.db.exec_with(
            "INSERT INTO app_passwd (name, mailbox, domain, password, imap_access, active) \
             VALUES ('phone', ?, ?, ?, ?, 1)",
            (&anna, DOMAIN, &hash, imap_access),
        );
        env.db.rows("SELECT MAX(id) FROM app_passwd")[0][0]
            .clone()
            .unwrap()
    };
    let id = app_password(1);
    let bh = BlackHole::new();
    let bh_port = bh.port().to_string();
    save_as_mailcow_ui(&env, r#"["staff"]"#, r#"["Staff"]"#, &[("port", &bh_port)]);
    serve.reload();
    imap_login(d.imap_port, &anna, &app_pw).assert_selected(&logs(&serve));
    assert_eq!(bh.connections(), 0, "{}", logs(&serve));
    assert_eq!(
        env.db.rows_with(
            "SELECT app_password FROM sasl_log WHERE username = ? AND service = 'imap'",
            (&anna,),
        ),
        vec![vec![Some(id)]]
    );

    // An app password without IMAP access is no app password here: LDAP refuses it.
    expire_cache();
    save_as_mailcow_ui(&env, r#"["staff"]"#, r#"["Staff"]"#, &[]);
    serve.reload();
    env.db.exec("DELETE FROM app_passwd");
    app_password(0);
    let r = imap_login(d.imap_port, &anna, &app_pw);
    assert!(
        r.login.starts_with("NO [AUTHENTICATIONFAILED]"),
        "{r:#?}\n{}",
        logs(&serve)
    );
    assert_eq!(
        php.requests().len(),
        php_calls,
        "mailcow's endpoint asked for an LDAP mailbox"
    );

    // serve down: a temporary failure, not "wrong password" as mailcow's own script
    // answers; serve is asked first for every login, mailcow's own mailboxes too (README).
    serve.kill();
    expire_cache();
    for (user, pw) in [(&cleo, "cleo-pw"), (&fred, "fred-other-pw")] {
        let r = imap_login(d.imap_port, user, pw);
        assert!(
            r.login.starts_with("NO [UNAVAILABLE]"),
            "{r:#?}\n{}",
            d.log()
        );
    }
    // INTERNAL_FAILURE keeps an expired cache entry: logins that succeeded before still do.
    for (user, pw) in [(&anna, "anna-pw"), (&fred, "fred-sql-pw")] {
        imap_login(d.imap_port, user, pw).assert_selected(&d.log());
    }
    assert_eq!(
        php.requests().len(),
        php_calls,
        "the cache answered, not mailcow"
    );
    assert!(!serve.log().contains("anna-pw") && !d.log().contains("anna-pw"));
}

/// The Lua script in mailcow mode for Dovecot 2.4 (mailcow's `feat/dovecot-2.4` images),
/// under a plain Lua 5.4 with a stand-in `dovecot` table and a one-request HTTP stand-in
/// for serve that answers `serve_reply` (each of serve's answers; the whole chain on a real
/// Dovecot 2.4 is tests/mailcow24_e2e.rs), and the real PHP stand-in over HTTPS:
/// contrib/mailcow/passwd-verify.lua switched to 2.4 as its comments say. The client is
/// 192.0.2.7, SOGo's address when `from_sogo`. Returns the script's printed result lines.
fn lua24(
    php: &MailcowPhp,
    serve_reply: &str,
    user: &str,
    password: &str,
    from_sogo: bool,
) -> Vec<String> {
    const CLIENT: &str = "192.0.2.7";
    let dir = tempfile::tempdir_in(common::process::scratch()).expect("temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let wrapper = e2e::dovecot::mailcow_wrapper_with(
        &format!("http://{}/", answer_once(serve_reply)),
        token.to_str().unwrap(),
        &php.url,
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/contrib/dovecot/lua/mailcow-ldap-auth.lua"
        ),
        true,
    )
    .replace(
        "172.22.1.248",
        if from_sogo { CLIENT } else { "172.22.1.248" },
    );
    let wrapper_path = dir.path().join("passwd-verify.lua");
    std::fs::write(&wrapper_path, wrapper).unwrap();
    let quoted = |s: &str| format!("{s:?}");
    let driver = format!(
        r#"
dovecot = {{
  auth = setmetatable({{}}, {{ __index = function(_, name) return name end }}),
  i_error = function(message) io.stderr:write(message, "\n") end,
  i_info = function(message) io.stderr:write(message, "\n") end,
}}
dofile({wrapper})
print("init=" .. tostring(script_init({{ blocking = "yes", result_success = "return-ok" }})))
print("cache_key=" .. tostring(auth_passdb_get_cache_key and auth_passdb_get_cache_key()))
local req = {{ auth_user = {user}, user = {user}, protocol = "imap", remote_ip = {client:?} }}
local result, extra = auth_password_verify(req, {password})
{print_result}
"#,
        wrapper = quoted(wrapper_path.to_str().unwrap()),
        print_result = common::lua::PRINT_RESULT,
        user = quoted(user),
        password = quoted(password),
        client = CLIENT,
    );
    let out = std::process::Command::new("lua5.4")
        .arg("-e")
        .arg(&driver)
        .output()
        .expect("run lua5.4");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

/// Answers the first request made to it with `reply` as serve's text reply (what the script
/// asks for with `Accept: text/plain`).
fn answer_once(reply: &str) -> std::net::SocketAddr {
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{reply}",
        reply.len()
    );
    common::lua::stand_in_serve(vec![(std::time::Duration::ZERO, answer)])
}

#[test]
fn on_dovecot_2_4_the_script_makes_mailcows_2_4_request_and_keeps_its_cache_key() {
    let fred = format!("fred@{DOMAIN}");
    let php = MailcowPhp::start(&[(fred.as_str(), "fred-sql-pw")]);
    let lines = lua24(&php, "NEXT\n", &fred, "fred-sql-pw", false);
    assert_eq!(
        lines,
        [
            "init=0",
            "cache_key=%{protocol}:%{user | username}\t:%{password}",
            "result=PASSDB_RESULT_OK",
            "field=msg=",
        ]
    );
    // mailcow's 2.4 request: auth_user, remote_ip, protocol
    assert_eq!(
        php.requests(),
        [
            json!({"username": fred, "password": "fred-sql-pw", "real_rip": "192.0.2.7", "service": "imap"})
        ]
    );
    let lines = lua24(&php, "NEXT\n", &fred, "wrong", false);
    assert_eq!(
        lines[2..],
        [
            "result=PASSDB_RESULT_PASSWORD_MISMATCH",
            "message=Failed to authenticate"
        ]
    );
    // serve's own answer is final: mailcow is not asked
    let lines = lua24(
        &php,
        "PASSWORD_MISMATCH\nreason=wrong password\n",
        &fred,
        "x",
        false,
    );
    assert_eq!(
        lines[2..],
        [
            "result=PASSDB_RESULT_PASSWORD_MISMATCH",
            "message=wrong password"
        ]
    );
    // no domain: mailcow's USER_UNKNOWN, before anyone is asked
    let lines = lua24(&php, "OK\nuser=x\n", "fred", "x", false);
    assert_eq!(
        lines[2..],
        ["result=PASSDB_RESULT_USER_UNKNOWN", "message=No such user"]
    );
    assert_eq!(php.requests().len(), 2);
    // SOGo's logins (its single sign-on secret) go to mailcow only, whatever serve would say
    let lines = lua24(
        &php,
        "PASSWORD_MISMATCH\nreason=x\n",
        &fred,
        "fred-sql-pw",
        true,
    );
    assert_eq!(lines[2..], ["result=PASSDB_RESULT_OK", "field=msg="]);
    assert_eq!(php.requests().len(), 3);
}
