//! The Debian package, as an admin meets it: `apt-get install ./….deb`, the files where the
//! README says, a login through the INSTALLED binary against the test servers, a reinstall
//! that keeps the edited config, then `dpkg --purge` leaving nothing behind.
//!
//! Needs root and a built package: `scripts/test.sh` runs `scripts/build-deb.sh`, then this
//! test with `MAILCOW_LDAP_AUTH_DEB=target/debian/….deb` and `--ignored` (it installs a
//! package on the machine, so plain `cargo test` leaves it out).
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::*;
use provision_helpers::insert_golden_template;
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PACKAGE: &str = "mailcow-ldap-auth";
const INSTALLED_BIN: &str = "/usr/bin/mailcow-ldap-auth";
const CONFFILE: &str = "/etc/mailcow-ldap-auth/config.yml";
const STATE_DIR: &str = "/var/lib/mailcow-ldap-auth";
const SHARE: &str = "/usr/share/mailcow-ldap-auth";
const UNITS: &str = "/usr/lib/systemd/system";
const PW: &str = "Alice-Pw-1 ä*()\\";
const ALICE: &str = "alice@example.org";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[track_caller]
fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: Output) -> String {
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("ok installed"))
}

/// Purges the package when the test ends, also when it fails half-way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if installed() {
            let _ = Command::new("dpkg").args(["--purge", PACKAGE]).status();
        }
    }
}

/// Every file of a contrib directory (recursively), relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            let sub = files_under(&path);
            let name = PathBuf::from(path.file_name().unwrap());
            found.extend(sub.into_iter().map(|p| name.join(p)));
        } else {
            found.push(PathBuf::from(path.file_name().unwrap()));
        }
    }
    found
}

/// A contrib file as the package ships it: the hand-install paths under /usr/local moved to
/// /usr (scripts/build-deb.sh).
fn packaged_text(contrib_file: &Path) -> String {
    let text = std::fs::read_to_string(contrib_file)
        .unwrap_or_else(|e| panic!("{}: {e}", contrib_file.display()));
    ["bin", "share"].iter().fold(text, |text, dir| {
        text.replace(
            &format!("/usr/local/{dir}/mailcow-ldap-auth"),
            &format!("/usr/{dir}/mailcow-ldap-auth"),
        )
    })
}

/// Every path under /usr/share/mailcow-ldap-auth or /usr/bin/mailcow-ldap-auth that `text`
/// names (what a snippet tells Dovecot or the admin to use).
fn package_paths_named(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || "\"'=,;()".contains(c))
        .filter(|word| word.starts_with(SHARE) || word.starts_with(INSTALLED_BIN))
        .map(|word| word.trim_end_matches(['.', ':']).to_owned())
        .collect()
}

/// Each file the package must install, with the repository file it must hold.
fn expected_files() -> Vec<(PathBuf, PathBuf)> {
    let mut files = vec![
        (
            INSTALLED_BIN.into(),
            PathBuf::new(), // built, not copied: checked by running it
        ),
        (CONFFILE.into(), repo("examples/config.yml")),
        (
            "/usr/share/lintian/overrides/mailcow-ldap-auth".into(),
            repo("debian/lintian-overrides"),
        ),
        (
            "/usr/share/bash-completion/completions/mailcow-ldap-auth".into(),
            repo("contrib/completions/mailcow-ldap-auth"),
        ),
        (
            "/usr/share/zsh/vendor-completions/_mailcow-ldap-auth".into(),
            repo("contrib/completions/_mailcow-ldap-auth"),
        ),
        (
            "/usr/share/fish/vendor_completions.d/mailcow-ldap-auth.fish".into(),
            repo("contrib/completions/mailcow-ldap-auth.fish"),
        ),
    ];
    for page in files_under(&repo("contrib/man")) {
        let gz = format!("/usr/share/man/man1/{}.gz", page.display());
        files.push((gz.into(), repo("contrib/man").join(page)));
    }
    for dir in ["dovecot", "cron", "postfix"] {
        for file in files_under(&repo(&format!("contrib/{dir}"))) {
            // Lua scripts at the top, where the snippets load them from
            let installed = if file.extension().is_some_and(|e| e == "lua") {
                Path::new(SHARE).join(file.file_name().unwrap())
            } else {
                Path::new(SHARE).join(dir).join(&file)
            };
            files.push((installed, repo(&format!("contrib/{dir}")).join(file)));
        }
    }
    for file in files_under(&repo("contrib/systemd")) {
        files.push((
            Path::new(UNITS).join(&file),
            repo("contrib/systemd").join(file),
        ));
    }
    files
}

fn group_id(name: &str) -> u32 {
    let line = stdout(run("getent", &["group", name]));
    line.split(':').nth(2).unwrap().parse().expect("gid")
}

fn user_id(name: &str) -> u32 {
    let line = stdout(run("getent", &["passwd", name]));
    line.split(':').nth(2).unwrap().parse().expect("uid")
}

/// Files naming the package in `dirs` (systemd's unit links, deb-systemd-helper's state).
fn files_naming_the_package(dirs: &[&str]) -> Vec<String> {
    let out = Command::new("find")
        .args(dirs)
        .args(["-name", "*mailcow-ldap-auth*"])
        .output()
        .expect("find");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

const ENABLED_UNITS: &str = "/etc/systemd/system";
/// deb-systemd-helper's bookkeeping, which lets purge undo what the admin enabled.
const SYSTEMD_HELPER_STATE: [&str; 2] = [
    "/var/lib/systemd/deb-systemd-helper-enabled",
    "/var/lib/systemd/deb-systemd-helper-masked",
];

fn apt_install(deb: &Path, options: &[&str]) {
    let mut args = vec!["-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q"];
    args.push("--no-install-recommends");
    args.extend(options);
    args.push(deb.to_str().expect("UTF-8 path"));
    run("apt-get", &args);
}

#[test]
#[ignore = "installs a Debian package: scripts/test.sh runs it after scripts/build-deb.sh"]
fn package_installs_logs_in_and_purges_cleanly() {
    let deb = std::env::var("MAILCOW_LDAP_AUTH_DEB")
        .expect("MAILCOW_LDAP_AUTH_DEB=path of the .deb (scripts/build-deb.sh builds it)");
    let deb = std::fs::canonicalize(&deb).unwrap_or_else(|e| panic!("{deb}: {e}"));
    assert!(
        !installed(),
        "{PACKAGE} is installed on this machine already: purge it before running this test"
    );

    // -- install
    let _purge = Installed;
    apt_install(&deb, &[]);
    assert!(installed());
    let version = stdout(run(INSTALLED_BIN, &["--version"]));
    assert_eq!(
        version.trim(),
        format!("mailcow-ldap-auth {}", env!("CARGO_PKG_VERSION"))
    );
    // a version bump needs its debian/changelog entry
    let package_version = stdout(run("dpkg-query", &["-W", "-f=${Version}", PACKAGE]));
    assert_eq!(package_version, format!("{}-1", env!("CARGO_PKG_VERSION")));
    let changelog = std::fs::read_to_string(repo("debian/changelog")).expect("changelog");
    assert!(
        changelog.starts_with(&format!("{PACKAGE} ({package_version}) ")),
        "debian/changelog does not start with {package_version}"
    );

    // -- the files, and only these (dpkg -L also lists the directories)
    let listed: BTreeSet<PathBuf> = stdout(run("dpkg", &["-L", PACKAGE]))
        .lines()
        .map(PathBuf::from)
        .filter(|p| !p.is_dir())
        .collect();
    let expected = expected_files();
    for (path, source) in &expected {
        assert!(listed.contains(path), "dpkg -L lacks {}", path.display());
        if source.as_os_str().is_empty() {
            continue;
        }
        let shipped = if path.extension().is_some_and(|e| e == "gz") {
            stdout(run("zcat", &[path.to_str().unwrap()]))
        } else {
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        assert_eq!(
            shipped,
            packaged_text(source),
            "{} differs from {}",
            path.display(),
            source.display()
        );
    }
    // what the shipped snippets and units name is there
    for (path, _) in expected
        .iter()
        .filter(|(p, _)| p.starts_with(SHARE) || p.starts_with(UNITS) || p.starts_with("/etc"))
    {
        let text = std::fs::read_to_string(path).expect("installed text file");
        for named in package_paths_named(&text) {
            assert!(
                Path::new(&named).exists(),
                "{} names {named}, which the package does not install",
                path.display()
            );
        }
    }
    let unexpected: Vec<&PathBuf> = listed
        .iter()
        .filter(|p| !expected.iter().any(|(e, _)| e == *p))
        .filter(|p| !p.starts_with("/usr/share/doc/mailcow-ldap-auth"))
        .collect();
    assert!(unexpected.is_empty(), "unexpected files: {unexpected:?}");
    let service = std::fs::read_to_string(format!("{UNITS}/mailcow-ldap-auth-sync.service"))
        .expect("service unit");
    assert!(
        service.lines().any(|l| l
            == "ExecStart=/usr/bin/mailcow-ldap-auth --config /etc/mailcow-ldap-auth/config.yml sync"),
        "{service}"
    );
    let conffiles = stdout(run("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]));
    assert!(conffiles.contains(CONFFILE), "conffiles: {conffiles}");

    // -- permissions: the config for root and group dovecot only, the state dir for root
    let config = std::fs::metadata(CONFFILE).expect("config");
    assert_eq!(config.permissions().mode() & 0o7777, 0o640);
    assert_eq!((config.uid(), config.gid()), (0, group_id("dovecot")));
    let state = std::fs::metadata(STATE_DIR).expect("state dir");
    assert!(state.is_dir());
    assert_eq!(state.permissions().mode() & 0o7777, 0o700);
    assert_eq!(state.uid(), 0);
    // nothing enabled unasked (nor started: the units are not even linked)
    assert_eq!(
        files_naming_the_package(&[ENABLED_UNITS]),
        Vec::<String>::new()
    );

    // -- a login through the installed binary, with the installed config file (default path)
    let mut env = TestEnv::new(&[LdapUser::new("alice", ALICE, PW)
        .employee_type("staff")
        .display_name("Alice Example")]);
    env.cfg["log"]["stderr"] = "errors".into();
    env.db.add_domain(&Domain::new("example.org"));
    insert_golden_template(&env.db, "Staff");
    // Overwriting keeps the file's owner and mode: what an admin's editor does.
    std::fs::write(
        CONFFILE,
        serde_norway::to_string(&env.cfg).expect("config to YAML"),
    )
    .expect("write the installed config");

    let out = Run::checkpassword(&env.cfg)
        .binary(INSTALLED_BIN)
        .no_config()
        .login(ALICE, PW)
        .run();
    out.assert_code(0).assert_never_printed(PW);
    assert_eq!(out.exported().get("USER").map(String::as_str), Some(ALICE));
    let out = Run::checkpassword(&env.cfg)
        .binary(INSTALLED_BIN)
        .no_config()
        .login(ALICE, "wrong")
        .run();
    out.assert_code(1);

    // an upgrade (here: the same version again) keeps the edited config, its group and mode
    let edited = std::fs::read(CONFFILE).expect("config");
    apt_install(&deb, &["--reinstall"]);
    assert_eq!(std::fs::read(CONFFILE).expect("config"), edited);
    let config = std::fs::metadata(CONFFILE).expect("config");
    assert_eq!(config.permissions().mode() & 0o7777, 0o640);
    assert_eq!(config.gid(), group_id("dovecot"));

    // Dovecot's auth process (user dovecot) reads the config through its group.
    let as_dovecot = Command::new(INSTALLED_BIN)
        .arg("test-connection")
        .uid(user_id("dovecot"))
        .gid(group_id("dovecot"))
        .output()
        .expect("test-connection as dovecot");
    assert!(
        as_dovecot.status.success(),
        "test-connection as dovecot: {as_dovecot:?}"
    );

    // -- purge: the conffile (edited above), the state dir and every file go
    run("dpkg", &["--purge", PACKAGE]);
    assert!(!installed());
    for path in listed
        .iter()
        .map(PathBuf::as_path)
        .chain([Path::new("/etc/mailcow-ldap-auth"), Path::new(STATE_DIR)])
        .chain([
            Path::new(SHARE),
            Path::new("/usr/share/doc/mailcow-ldap-auth"),
        ])
    {
        assert!(!path.exists(), "{} left after purge", path.display());
    }
    let mut systemd_dirs = vec![ENABLED_UNITS];
    systemd_dirs.extend(SYSTEMD_HELPER_STATE);
    assert_eq!(
        files_naming_the_package(&systemd_dirs),
        Vec::<String>::new()
    );
}
