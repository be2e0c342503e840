//! contrib/dovecot/lua/mailcow-ldap-auth.lua under a plain Lua 5.4 (Debian's `lua5.4`, the
//! Lua Dovecot's auth module links) with a stand-in `dovecot` table: the faults a real Dovecot
//! cannot easily stage — the program missing, killed, or answering nonsense — and exactly what
//! the script hands the program (argv, stdin). The real Dovecot runs it in dovecot_lua_e2e.rs.
mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/dovecot/lua/mailcow-ldap-auth.lua"
);

/// A Lua string literal holding exactly these bytes.
fn lua_string(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for b in bytes {
        s.push_str(&format!("\\{b:03}"));
    }
    s.push('"');
    s
}

/// What one call of the script returned.
#[derive(Debug)]
struct Called {
    /// `script_init`'s return value.
    init: String,
    /// e.g. `PASSDB_RESULT_OK` (the stand-in constants are their own names).
    result: String,
    /// The table returned with OK, sorted.
    fields: Vec<(String, String)>,
    /// The string returned otherwise.
    message: String,
    /// Reply files (`os.tmpname()`) still there afterwards.
    leftovers: Vec<String>,
    stderr: String,
}

struct Call<'a> {
    settings: Vec<(&'a str, String)>,
    env: Vec<(&'a str, String)>,
    /// `auth_password_verify`, `auth_userdb_lookup` or `auth_passdb_lookup`.
    function: &'a str,
    user: &'a [u8],
    password: &'a [u8],
}

impl<'a> Call<'a> {
    fn new(binary: &Path, config: &Path, function: &'a str, user: &'a str) -> Call<'a> {
        Call {
            settings: vec![
                ("binary", binary.display().to_string()),
                ("config", config.display().to_string()),
                ("dovecot", "2.3".into()),
            ],
            env: Vec::new(),
            function,
            user: user.as_bytes(),
            password: b"",
        }
    }

    fn run(&self) -> Called {
        let settings = self
            .settings
            .iter()
            .map(|(k, v)| {
                format!(
                    "[{}] = {}",
                    lua_string(k.as_bytes()),
                    lua_string(v.as_bytes())
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let driver = format!(
            r#"
dovecot = {{
  auth = setmetatable({{}}, {{ __index = function(_, name) return name end }}),
  i_error = function(message) io.stderr:write(message, "\n") end,
}}
local made = {{}}
local tmpname = os.tmpname
os.tmpname = function() local name = tmpname(); made[#made + 1] = name; return name end
dofile({script})
print("init=" .. tostring(script_init({{ {settings} }})))
local req = {{
  user = {user}, service = "imap", remote_ip = "192.0.2.7",
  var_expand = function(_, template) return template end,
}}
local result, extra = {function}(req, {password})
{print_result}
for _, name in ipairs(made) do
  local file = io.open(name)
  if file then file:close(); print("leftover=" .. name) end
end
"#,
            script = lua_string(SCRIPT.as_bytes()),
            print_result = common::lua::PRINT_RESULT,
            user = lua_string(self.user),
            function = self.function,
            password = lua_string(self.password),
        );
        let mut command = Command::new("lua5.4");
        // SAFETY: only async-signal-safe signal() between fork and exec. Dovecot ignores
        // SIGPIPE; so does this stand-in, or a program that exits before reading its stdin
        // would kill the interpreter.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                Ok(())
            });
        }
        let out = command
            .arg("-e")
            .arg(&driver)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run lua5.4 (package lua5.4)");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "lua5.4 failed:\n{stdout}\n{stderr}");
        let get = |prefix: &str| -> Vec<String> {
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .map(String::from)
                .collect()
        };
        let mut fields: Vec<(String, String)> = get("field=")
            .iter()
            .map(|f| {
                let (k, v) = f.split_once('=').expect("key=value");
                (k.to_string(), v.to_string())
            })
            .collect();
        fields.sort();
        Called {
            init: get("init=").concat(),
            result: get("result=").concat(),
            fields,
            message: get("message=").concat(),
            leftovers: get("leftover="),
            stderr,
        }
    }
}

/// A stand-in program: a shell script with this body, in `dir`.
fn fake_program(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-mailcow-ldap-auth");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write fake program");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(common::process::scratch()).expect("temp dir")
}

/// The config of `env` written to a file.
fn config_file(env: &TestEnv, dir: &Path) -> PathBuf {
    let path = dir.join("config.yml");
    std::fs::write(&path, serde_norway::to_string(&env.cfg).unwrap()).expect("write config");
    path
}

#[test]
fn the_real_program_answers_through_the_script() {
    const PW: &str = "it's \"$(id)\" `id` %u ü";
    let env = TestEnv::new(&[LdapUser::new("alice", "alice@example.org", PW)]);
    env.db.add_domain(&Domain::new("example.org"));
    env.db.add_mailbox(&Mailbox::new("alice@example.org"));
    let dir = temp_dir();
    let config = config_file(&env, dir.path());
    let binary = Path::new(common::cmd::BIN);

    let mut call = Call::new(binary, &config, "auth_password_verify", "alice@example.org");
    call.password = PW.as_bytes();
    let called = call.run();
    assert_eq!(called.init, "0");
    assert_eq!(called.result, "PASSDB_RESULT_OK", "{called:#?}");
    assert!(
        called
            .fields
            .contains(&("user".into(), "alice@example.org".into())),
        "{called:#?}"
    );
    assert!(
        called
            .fields
            .contains(&("userdb_home".into(), "/var/vmail/example.org/alice".into())),
        "{called:#?}"
    );
    assert!(called.leftovers.is_empty(), "{called:#?}");

    call.password = b"wrong";
    let called = call.run();
    assert_eq!(
        called.result, "PASSDB_RESULT_PASSWORD_MISMATCH",
        "{called:#?}"
    );
    assert_eq!(called.message, "wrong password");
    assert!(called.leftovers.is_empty(), "{called:#?}");

    let called = Call::new(binary, &config, "auth_userdb_lookup", "alice@example.org").run();
    assert_eq!(called.result, "USERDB_RESULT_OK", "{called:#?}");
    assert!(called.fields.contains(&("uid".into(), "5000".into())));
    let called = Call::new(binary, &config, "auth_userdb_lookup", "bob@example.org").run();
    assert_eq!(called.result, "USERDB_RESULT_USER_UNKNOWN", "{called:#?}");

    let called = Call::new(binary, &config, "auth_passdb_lookup", "alice@example.org").run();
    assert_eq!(called.result, "PASSDB_RESULT_SCHEME_NOT_AVAILABLE");
}

#[test]
fn argv_and_stdin_carry_odd_values_intact_and_the_password_only_on_stdin() {
    let dir = temp_dir();
    let seen = dir.path().join("seen");
    std::fs::create_dir(&seen).unwrap();
    let program = fake_program(
        dir.path(),
        &format!(
            "for a in \"$@\"; do printf '%s\\n' \"$a\"; done > {s}/argv\ncat > {s}/stdin\n\
             env > {s}/environ\nprintf 'OK\\nuser=u\\n' > \"$(eval echo \\${{$(($#-2))}})\"",
            s = seen.display()
        ),
    );
    let user = "o'neil \"$(touch x)\" `id` %d ü@example.org";
    let password = b"p'w \"$(touch y)\" `id` %u \xc3\xbc\n\\";
    let mut call = Call::new(
        &program,
        Path::new("/etc/x.yml"),
        "auth_password_verify",
        user,
    );
    call.password = password;
    let called = call.run();
    assert_eq!(called.result, "PASSDB_RESULT_OK", "{called:#?}");
    let argv = std::fs::read_to_string(seen.join("argv")).unwrap();
    let argv: Vec<&str> = argv.lines().collect();
    assert_eq!(
        argv[..11],
        [
            "--config",
            "/etc/x.yml",
            "dovecot-lua",
            "verify",
            "--service",
            "imap",
            "--remote-ip",
            "192.0.2.7",
            "--dovecot",
            "2.3",
            "--reply-file"
        ]
    );
    assert_eq!(argv[12..], ["--", user]);
    assert_eq!(std::fs::read(seen.join("stdin")).unwrap(), password);
    let environ = std::fs::read(seen.join("environ")).unwrap();
    assert!(
        !environ.windows(5).any(|w| w == b"p'w \""),
        "the password is in the program's environment"
    );
    assert!(called.leftovers.is_empty(), "{called:#?}");
}

#[test]
fn a_missing_killed_or_confused_program_is_an_internal_failure() {
    let dir = temp_dir();
    let reply_arg = "\"$(eval echo \\${$(($#-2))})\"";
    let cases = [
        ("missing", None, "exit 127"),
        (
            "killed",
            Some("cat > /dev/null; kill -9 $$".to_string()),
            "signal 9",
        ),
        (
            "tempfail",
            Some("echo INTERNAL_FAILURE > /dev/null; exit 111".into()),
            "exit 111",
        ),
        (
            "OK but exit 1",
            Some(format!("printf 'OK\\nuser=u\\n' > {reply_arg}; exit 1")),
            "malformed reply",
        ),
        (
            "no result word",
            Some(format!("printf 'hello\\n' > {reply_arg}; exit 0")),
            "malformed reply",
        ),
        (
            "a line without =",
            Some(format!("printf 'OK\\nuser\\n' > {reply_arg}; exit 0")),
            "malformed reply line",
        ),
        (
            "a word Dovecot lacks",
            Some(format!("printf 'PASS_EXPIRED\\n' > {reply_arg}; exit 1")),
            "unexpected result PASS_EXPIRED",
        ),
    ];
    for (name, body, why) in cases {
        let program = match &body {
            Some(body) => fake_program(dir.path(), body),
            None => dir.path().join("not-there"),
        };
        for function in ["auth_password_verify", "auth_userdb_lookup"] {
            let mut call = Call::new(&program, Path::new("/etc/x.yml"), function, "a@example.org");
            call.password = b"pw";
            let called = call.run();
            let want = if function == "auth_userdb_lookup" {
                "USERDB_RESULT_INTERNAL_FAILURE"
            } else {
                "PASSDB_RESULT_INTERNAL_FAILURE"
            };
            assert_eq!(called.result, want, "{name} {function}: {called:#?}");
            assert!(
                called.message.contains(why),
                "{name} {function}: {called:#?}"
            );
            assert!(called.leftovers.is_empty(), "{name}: {called:#?}");
        }
    }
}

#[test]
fn a_nul_in_the_user_name_is_an_internal_failure_and_runs_nothing() {
    let dir = temp_dir();
    let ran = dir.path().join("ran");
    let program = fake_program(dir.path(), &format!("touch {}", ran.display()));
    let mut call = Call::new(&program, Path::new("/x"), "auth_password_verify", "a");
    call.user = b"a\0b@example.org";
    call.password = b"pw";
    let called = call.run();
    assert_eq!(called.result, "PASSDB_RESULT_INTERNAL_FAILURE");
    assert!(called.message.contains("NUL"), "{called:#?}");
    assert!(!ran.exists());
}

#[test]
fn settings_come_from_script_init_or_the_environment_and_are_required() {
    let dir = temp_dir();
    let program = fake_program(dir.path(), "exit 111");
    let mut call = Call::new(&program, Path::new("/x"), "auth_passdb_lookup", "a");
    call.settings.retain(|(k, _)| *k != "config");
    let called = call.run();
    assert_eq!(called.init, "1", "{called:#?}");
    assert!(called.stderr.contains("'config' is missing"), "{called:#?}");

    // Dovecot 2.3: import_environment
    call.settings.clear();
    call.env = vec![
        ("MAILCOW_LDAP_AUTH_BINARY", program.display().to_string()),
        ("MAILCOW_LDAP_AUTH_CONFIG", "/x".into()),
        ("MAILCOW_LDAP_AUTH_DOVECOT", "2.3".into()),
    ];
    assert_eq!(call.run().init, "0");

    call.env[2].1 = "2.5".into();
    let called = call.run();
    assert_eq!(called.init, "1");
    assert!(called.stderr.contains("must be 2.3 or 2.4"), "{called:#?}");
}

/// The url transport to a stand-in serve answering with `pieces` (see
/// [`common::lua::stand_in_serve`]), the token file in `dir`.
fn url_call<'a>(dir: &Path, pieces: &[(u64, &str)], timeout_ms: &str) -> Call<'a> {
    let token = dir.join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let pieces = pieces
        .iter()
        .map(|(ms, piece)| (Duration::from_millis(*ms), piece.to_string()))
        .collect();
    let addr = common::lua::stand_in_serve(pieces);
    let mut call = Call::new(Path::new("-"), Path::new("-"), "auth_password_verify", "al");
    call.settings = vec![
        ("url", format!("http://{addr}/")),
        ("token_file", token.display().to_string()),
        ("dovecot", "2.3".into()),
        ("timeout_ms", timeout_ms.into()),
    ];
    call.password = b"pw";
    call
}

#[test]
fn an_answer_arriving_in_pieces_is_read_whole() {
    let dir = temp_dir();
    let body = "OK\nuser=al@example.org\n";
    let rest_of_head = format!(
        "Type: text/plain\r\nContent-Length: {}\r\n\r\nOK\n",
        body.len()
    );
    // Split inside a header line and inside the body: the script waits for each rest.
    let pieces = [
        (0, "HTTP/1.1 200 OK\r\nContent-"),
        (100, rest_of_head.as_str()),
        (100, &body[3..]),
    ];
    let called = url_call(dir.path(), &pieces, "15000").run();
    assert_eq!(called.result, "PASSDB_RESULT_OK", "{called:#?}");
    assert_eq!(called.fields, [("user".into(), "al@example.org".into())]);
}

#[test]
fn timeout_ms_bounds_the_whole_answer_not_each_wait() {
    let dir = temp_dir();
    // Each pause is shorter than timeout_ms, together they are longer.
    let pieces = [
        (0, "HTTP/1.1 200 OK\r\n"),
        (300, "Content-Type: text/plain\r\n"),
        (300, "Content-Length: 3\r\n\r\nOK\n"),
    ];
    let called = url_call(dir.path(), &pieces, "500").run();
    assert_eq!(
        called.result, "PASSDB_RESULT_INTERNAL_FAILURE",
        "{called:#?}"
    );
    assert!(called.message.contains("timeout"), "{called:#?}");
}
