//! `sync` integration tests: the real binary (`mailcow-ldap-auth --config … sync`) against the
//! throwaway slapd (with `limits users size.prtotal=unlimited`, so only a paged search sees more
//! than 500 entries) and a MariaDB loaded with the real mailcow schema. Every test has its own
//! LDAP subtree, database and state directory.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::*;
use provision_helpers::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const BOB: &str = "bob@example.org";
const PW: &str = "Sync-user-pw-1";
const OLD: &str = "2020-01-01 00:00:00";

fn default_hash() -> String {
    vector("mailcow Default mailbox template as inserted by mailcow").1
}

fn staff_text() -> String {
    golden()["template"]["attributes_text"]
        .as_str()
        .unwrap()
        .into()
}

fn user(uid: &str, employee_type: &str) -> LdapUser {
    LdapUser::new(uid, &format!("{uid}@example.org"), PW).employee_type(employee_type)
}

fn bob() -> LdapUser {
    LdapUser::new("bob", BOB, PW)
        .display_name("Bob Example")
        .employee_type("staff")
}

/// One test's world: LDAP subtree, database (golden domain, StaffUI mapped from `staff`,
/// mailcow's built-in Default as default_template), sync on, and a state directory.
struct SyncEnv {
    env: TestEnv,
    state: tempfile::TempDir,
}

impl SyncEnv {
    fn new(users: &[LdapUser]) -> SyncEnv {
        Self::with_domain(users, DomainRow::from_golden(&golden()))
    }

    fn with_domain(users: &[LdapUser], domain: DomainRow) -> SyncEnv {
        let mut env = TestEnv::new(users);
        env.cfg["ldap"].as_object_mut().unwrap().remove("ca_file");
        domain.insert(&env.db);
        insert_template(&env.db, "StaffUI", &staff_text());
        env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "StaffUI" }]);
        env.cfg["default_template"] = json!("Default");
        env.cfg["sync"] =
            json!({ "import_users": true, "periodic_full_sync": true, "interval_minutes": 15 });
        let state = tempfile::Builder::new()
            .prefix("state.")
            .tempdir_in(common::process::scratch())
            .expect("state dir");
        SyncEnv { env, state }
    }

    fn state_dir(&self) -> PathBuf {
        self.state.path().join("state")
    }

    /// `sync --state-dir <dir> ARGS…`
    fn sync(&self, args: &[&str]) -> Outcome {
        let dir = self.state_dir();
        let mut all = vec!["sync", "--state-dir", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        Run::subcommand(&self.env.cfg, &all).run()
    }

    fn db(&self) -> &TestDb {
        &self.env.db
    }

    fn last_run(&self) -> Option<String> {
        std::fs::read_to_string(self.state_dir().join("sync.last")).ok()
    }
}

/// The one summary line of a run, as `key → value`.
#[track_caller]
fn summary(out: &Outcome) -> BTreeMap<String, u64> {
    let text = format!("{}\n{}", out.stderr, out.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("sync ") && l.contains(" created=") && l.contains(" ms="))
        .collect();
    assert_eq!(lines.len(), 1, "one summary line expected:\n{out}");
    lines[0]
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| *k != "ms")
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

#[track_caller]
fn assert_summary(out: &Outcome, expected: &[(&str, u64)]) {
    let got = summary(out);
    let want: BTreeMap<String, u64> = expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(got, want, "summary of:\n{out}");
}

fn mailbox_count(db: &TestDb) -> i64 {
    db.rows("SELECT COUNT(*) FROM mailbox")[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

fn usernames(db: &TestDb) -> Vec<String> {
    db.rows("SELECT username FROM mailbox ORDER BY username")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

fn stored_hash(db: &TestDb, username: &str) -> Option<String> {
    db.rows_with(
        "SELECT JSON_VALUE(attributes, '$.attribute_hash') FROM mailbox WHERE username = ?",
        (username,),
    )
    .first()
    .and_then(|r| r[0].clone())
}

fn modified(db: &TestDb, username: &str) -> Option<String> {
    db.rows_with(
        "SELECT modified FROM mailbox WHERE username = ?",
        (username,),
    )[0][0]
        .clone()
}

fn golden_rows() -> BTreeMap<&'static str, Vec<Map<String, Value>>> {
    let g = golden();
    PROVISIONED
        .iter()
        .map(|t| t.name)
        .map(|table| {
            let rows = g["rows"][table]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| normalise(table, r.as_object().unwrap()))
                .collect();
            (table, rows)
        })
        .collect()
}

fn lock_file(dir: &Path) -> std::fs::File {
    std::fs::create_dir_all(dir).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("sync.lock"))
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    f
}

// ---------------------------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------------------------

#[test]
fn import_creates_mapped_and_default_users_with_all_rows() {
    let mut nameless = user("carol", "contractor");
    nameless.display_name = None;
    let s = SyncEnv::new(&[
        bob(),
        LdapUser::new("dave", "dave@example.org", PW)
            .display_name("<Dave D>")
            .employee_type("contractor"),
        nameless,
        // no employeeType at all, and a mixed-case address as stored in LDAP
        LdapUser::new("erin", "Erin@Example.ORG", PW).display_name("Erin"),
    ]);
    let out = s.sync(&[]);
    out.assert_code(0)
        .assert_stderr_contains("sync user=bob@example.org result=created reason=\"mailbox created from template StaffUI")
        .assert_stderr_contains("RL_VALUE bob@example.org = 10 / 1h")
        .assert_stderr_contains("sync user=dave@example.org result=created reason=\"mailbox created from template Default")
        .assert_stderr_contains("sync user=erin@example.org result=created")
        .assert_never_printed(PW)
        .assert_never_printed(SVC_PW)
        .assert_never_printed(&s.db().password);
    assert_summary(
        &out,
        &[
            ("created", 4),
            ("reapplied", 0),
            ("unchanged", 0),
            ("skipped", 0),
            ("failed", 0),
            ("entries", 4),
        ],
    );
    // bob: exactly the rows mailcow (and a first login) writes
    assert_eq!(normalised_rows_of(s.db(), BOB), golden_rows());
    for who in ["dave@example.org", "carol@example.org", "erin@example.org"] {
        assert_one_of_each(s.db(), who, 0);
        assert_eq!(stored_hash(s.db(), who), Some(default_hash()), "{who}");
    }
    let names = s
        .db()
        .rows("SELECT username, name FROM mailbox ORDER BY username");
    let names: Vec<(String, String)> = names
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("bob@example.org", "Bob Example"),
            ("carol@example.org", "carol"),
            ("dave@example.org", "Dave D"),
            ("erin@example.org", "Erin"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(s.last_run().is_some(), "a completed run is recorded");

    // the imported users log in without any further change
    let before = snapshot(s.db());
    s.env
        .cp()
        .login(BOB, PW)
        .run()
        .assert_code(0)
        .assert_stderr_contains("reason=\"ok\"");
    assert_eq!(snapshot(s.db()), before);
}

#[test]
fn import_skips_unmapped_users_and_goes_on_past_refusals() {
    let mut small = DomainRow::from_golden(&golden());
    small.domain = "small.example".into();
    small.mailboxes = 1;
    let mut s = SyncEnv::new(&[
        user("carol", "contractor"),
        LdapUser::new("u1", "u1@small.example", PW).employee_type("staff"),
        LdapUser::new("u2", "u2@small.example", PW).employee_type("staff"),
        LdapUser::new("x", "x@missing.example", PW).employee_type("staff"),
        // two entries carrying one address (in two spellings): neither is imported
        LdapUser::new("twin1", "twin@example.org", PW).employee_type("staff"),
        LdapUser::new("twin2", "Twin@example.org", PW).employee_type("staff"),
        LdapUser::new("bad", "not-an-address", PW).employee_type("staff"),
        user("zed", "staff"),
    ]);
    small.insert(s.db());
    s.env.cfg["default_template"] = Value::Null;
    let out = s.sync(&[]);
    out.assert_code(0)
        .assert_stderr_contains(
            "sync user=carol@example.org result=skipped reason=\"no attribute mapping for carol@example.org ('contractor') and no default_template\"",
        )
        .assert_stderr_contains("result=failed reason=\"mailbox limit of domain small.example reached (1 of 1)\"")
        .assert_stderr_contains("sync user=x@missing.example result=failed reason=\"domain missing.example missing\"")
        .assert_stderr_contains("sync user=twin@example.org result=skipped reason=\"ambiguous: 2 LDAP entries")
        .assert_stderr_contains("result=skipped reason=\"mail 'not-an-address' is not a mail address");
    assert_summary(
        &out,
        &[
            ("created", 2),
            ("reapplied", 0),
            ("unchanged", 0),
            ("skipped", 4),
            ("failed", 2),
            ("entries", 8),
        ],
    );
    let names = usernames(s.db());
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"zed@example.org".to_string()), "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with("@small.example")),
        "{names:?}"
    );
    // refusals are per user: the run completed and counts for the interval
    assert!(s.last_run().is_some());
}

#[test]
fn paged_listing_imports_more_users_than_the_size_limit() {
    const N: usize = 600;
    let users: Vec<LdapUser> = (0..N)
        .map(|i| {
            let mut u = LdapUser::new(&format!("p{i:03}"), &format!("p{i:03}@example.org"), PW);
            u.password = None;
            u
        })
        .collect();
    let mut domain = DomainRow::from_golden(&golden());
    domain.mailboxes = 1000;
    let s = SyncEnv::with_domain(&users, domain);
    // without paging, the service account sees only 500 of them
    let mut c = ldap3::LdapConn::new(&slapd().url()).unwrap();
    c.simple_bind(SVC_DN, SVC_PW).unwrap().success().unwrap();
    let res = c
        .search(
            &s.env.ldap.dn,
            ldap3::Scope::Subtree,
            "(mail=*)",
            vec!["mail"],
        )
        .unwrap();
    assert_eq!((res.1.rc, res.0.len()), (4, 500), "slapd's size limit");
    let _ = c.unbind();

    let out = s.sync(&[]);
    out.assert_code(0);
    assert_summary(
        &out,
        &[
            ("created", N as u64),
            ("reapplied", 0),
            ("unchanged", 0),
            ("skipped", 0),
            ("failed", 0),
            ("entries", N as u64),
        ],
    );
    assert_eq!(mailbox_count(s.db()), N as i64);
    assert_eq!(
        s.db().rows("SELECT COUNT(*) FROM alias")[0][0].as_deref(),
        Some("600")
    );
    // a second, forced run finds nothing to do (Default never updates)
    let out = s.sync(&["--force"]);
    out.assert_code(0);
    assert_summary(
        &out,
        &[
            ("created", 0),
            ("reapplied", 0),
            ("unchanged", 0),
            ("skipped", N as u64),
            ("failed", 0),
            ("entries", N as u64),
        ],
    );
}

#[test]
fn an_address_listed_again_in_a_later_chunk_is_left_out_there() {
    // more entries than a chunk (1,000): the two entries carrying one address are listed
    // 1,001 entries apart; the first, written with its chunk, stays; the second is left out
    let mut users = vec![LdapUser::new("twin1", "twin@example.org", PW)];
    users.extend((0..1000).map(|i| {
        let mut u = LdapUser::new(&format!("c{i:04}"), &format!("c{i:04}@example.org"), PW);
        u.password = None;
        u
    }));
    users.push(LdapUser::new("twin2", "Twin@example.org", PW));
    let mut domain = DomainRow::from_golden(&golden());
    domain.mailboxes = 2000;
    let s = SyncEnv::with_domain(&users, domain);
    // left out every run (the listing order is stable)
    for skipped in [1, 1002] {
        let out = s.sync(&["--force"]);
        out.assert_code(0).assert_stderr_contains(
            "sync user=twin@example.org result=skipped reason=\"ambiguous: an entry listed \
             earlier carries this address too; this one (uid=twin2,",
        );
        assert_eq!(summary(&out)["skipped"], skipped, "{out}");
        assert_eq!(summary(&out)["entries"], 1002, "{out}");
        assert_eq!(mailbox_count(s.db()), 1001);
    }
}

// ---------------------------------------------------------------------------------------------
// Full sync
// ---------------------------------------------------------------------------------------------

#[test]
fn full_sync_reapplies_a_changed_template_and_leaves_the_rest_alone() {
    let mut s = SyncEnv::new(&[
        bob(),
        user("alice", "staff"),
        user("ivy", "intern"),
        user("dave", "contractor"),
    ]);
    insert_template(s.db(), "Intern", &vector("empty object").0);
    s.env.cfg["attribute_mapping"] = json!([
        { "attribute": "staff", "template": "StaffUI" },
        { "attribute": "intern", "template": "Intern" }
    ]);
    s.sync(&[]).assert_code(0);
    assert_eq!(mailbox_count(s.db()), 4);
    // a marker that any write to a mailbox row would change (ON UPDATE current_timestamp)
    s.db().exec_with("UPDATE mailbox SET modified = ?", (OLD,));
    let before = snapshot(s.db());

    // nothing changed: nothing written
    let out = s.sync(&["--force"]);
    out.assert_code(0).assert_stderr_lacks("result=");
    assert_summary(
        &out,
        &[
            ("created", 0),
            ("reapplied", 0),
            ("unchanged", 3),
            ("skipped", 1),
            ("failed", 0),
            ("entries", 4),
        ],
    );
    assert_eq!(snapshot(s.db()), before);

    // StaffUI changes: its two mailboxes get the new hash (the PHP one), the others stay
    let (raw, php_hash) = vector("raw text stored with unescaped UTF-8, emoji and spaces");
    set_template_text(s.db(), "StaffUI", &raw);
    let out = s.sync(&["--force"]);
    out.assert_code(0)
        .assert_stderr_contains(
            "sync user=bob@example.org result=reapplied reason=\"template StaffUI re-applied",
        )
        .assert_stderr_contains("sync user=alice@example.org result=reapplied");
    assert_summary(
        &out,
        &[
            ("created", 0),
            ("reapplied", 2),
            ("unchanged", 1),
            ("skipped", 1),
            ("failed", 0),
            ("entries", 4),
        ],
    );
    for who in [BOB, "alice@example.org"] {
        assert_eq!(stored_hash(s.db(), who), Some(php_hash.clone()), "{who}");
        assert_ne!(modified(s.db(), who).as_deref(), Some(OLD), "{who}");
        assert_one_of_each(s.db(), who, 4);
    }
    assert_eq!(
        json_rows(
            s.db(),
            "SELECT quota FROM mailbox WHERE username = 'bob@example.org'"
        )[0]["quota"],
        json!(5 * MIB)
    );
    let after = snapshot(s.db());
    for who in ["ivy@example.org", "dave@example.org"] {
        assert_eq!(modified(s.db(), who).as_deref(), Some(OLD), "{who}");
        let of = |snap: &BTreeMap<&str, Vec<Map<String, Value>>>| -> Vec<Map<String, Value>> {
            snap["mailbox"]
                .iter()
                .filter(|r| r["username"] == who)
                .cloned()
                .collect()
        };
        assert_eq!(of(&after), of(&before), "{who}");
    }
    assert_eq!(
        stored_hash(s.db(), "dave@example.org"),
        Some(default_hash())
    );

    // with periodic_full_sync off, a changed template is left for the next login
    s.env.cfg["sync"]["periodic_full_sync"] = json!(false);
    set_template_text(s.db(), "StaffUI", &staff_text());
    let before = snapshot(s.db());
    s.sync(&["--force"]).assert_code(0);
    assert_eq!(snapshot(s.db()), before);
}

#[test]
fn mailboxes_of_another_authsource_are_never_touched() {
    let mut s = SyncEnv::new(&[bob(), user("mo", "staff"), user("newbie", "staff")]);
    // only the full sync: no imports
    s.env.cfg["sync"]["import_users"] = json!(false);
    s.db()
        .add_mailbox(&Mailbox::new("mo@example.org").authsource("mailcow"));
    s.db().add_mailbox(&Mailbox::new(BOB));
    s.db().exec_with("UPDATE mailbox SET modified = ?", (OLD,));
    let mo_before = json_rows(
        s.db(),
        "SELECT * FROM mailbox WHERE username = 'mo@example.org'",
    );

    let out = s.sync(&[]);
    out.assert_code(0)
        .assert_stderr_contains("sync user=bob@example.org result=reapplied")
        .assert_stderr_lacks("user=mo@")
        .assert_stderr_lacks("user=newbie@");
    assert_summary(
        &out,
        &[
            ("created", 0),
            ("reapplied", 1),
            ("unchanged", 0),
            ("skipped", 2),
            ("failed", 0),
            ("entries", 3),
        ],
    );
    assert_eq!(
        json_rows(
            s.db(),
            "SELECT * FROM mailbox WHERE username = 'mo@example.org'"
        ),
        mo_before
    );
    assert_eq!(row_counts(s.db(), "mo@example.org")["user_acl"], 0);
    assert_eq!(usernames(s.db()), [BOB, "mo@example.org"]);
    assert_eq!(
        stored_hash(s.db(), BOB),
        golden()["template"]["attribute_hash"]
            .as_str()
            .map(String::from)
    );
}

// ---------------------------------------------------------------------------------------------
// Interval, lock, dry run
// ---------------------------------------------------------------------------------------------

#[test]
fn a_run_before_the_interval_is_a_silent_no_op_and_force_runs() {
    let s = SyncEnv::new(&[bob()]);
    let out = s.sync(&[]);
    out.assert_code(0);
    assert_eq!(summary(&out)["created"], 1);
    let stamp = s.last_run().expect("sync.last written");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.state_dir()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "state dir created 0700");

    // a new user appears; the next timer run comes too early and does nothing, silently
    s.env.ldap.add_user(&user("carol", "staff"));
    let out = s.sync(&[]);
    out.assert_code(0);
    assert_eq!(out.stderr, "", "{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert_eq!(usernames(s.db()), [BOB]);
    assert_eq!(s.last_run(), Some(stamp));

    let out = s.sync(&["--force"]);
    out.assert_code(0)
        .assert_stderr_contains("sync user=carol@example.org result=created");
    assert_eq!(summary(&out)["created"], 1);
    assert_eq!(usernames(s.db()), [BOB, "carol@example.org"]);
}

#[test]
fn a_held_lock_means_already_running() {
    let s = SyncEnv::new(&[bob()]);
    let held = lock_file(&s.state_dir());
    let out = s.sync(&["--force"]);
    out.assert_code(0)
        .assert_stderr_contains("sync already running");
    assert_eq!(mailbox_count(s.db()), 0);
    assert_eq!(s.last_run(), None);
    drop(held);
    s.sync(&[]).assert_code(0);
    assert_eq!(mailbox_count(s.db()), 1);
}

// ---------------------------------------------------------------------------------------------
// State directory: only this user's, nothing in it followed
// ---------------------------------------------------------------------------------------------

/// A file outside the state directory that a planted symlink points at.
fn foreign_file(s: &SyncEnv) -> PathBuf {
    let path = s.state.path().join("foreign");
    std::fs::write(&path, "not yours\n").unwrap();
    path
}

#[track_caller]
fn assert_untouched(foreign: &Path) {
    assert_eq!(std::fs::read_to_string(foreign).unwrap(), "not yours\n");
}

#[test]
fn a_state_dir_open_to_others_or_owned_by_another_user_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let s = SyncEnv::new(&[bob()]);
    let dir = s.state_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = s.sync(&[]);
    out.assert_code(111).assert_stderr_contains(&format!(
        "sync result=tempfail reason=\"refusing the state directory: {} is writable by group/others (mode 0777)",
        dir.display()
    ));
    assert_eq!(mailbox_count(s.db()), 0);
    assert!(!dir.join("sync.lock").exists());

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let out = s.sync(&[]);
    out.assert_code(111).assert_stderr_contains(&format!(
        "refusing the state directory: {} is owned by uid 65534, not this user (uid 0)",
        dir.display()
    ));
    assert_eq!(mailbox_count(s.db()), 0);
    assert!(!dir.join("sync.lock").exists());
}

#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
    let s = SyncEnv::new(&[bob()]);
    let foreign = foreign_file(&s);
    std::fs::create_dir(s.state_dir()).unwrap();
    std::os::unix::fs::symlink(&foreign, s.state_dir().join("sync.lock")).unwrap();
    let out = s.sync(&["--force"]);
    out.assert_code(111)
        .assert_stderr_contains("sync.lock is a symlink: refused");
    assert_untouched(&foreign);
    assert_eq!(mailbox_count(s.db()), 0);
}

#[test]
fn a_symlinked_last_run_file_is_refused_and_its_target_untouched() {
    let s = SyncEnv::new(&[bob()]);
    let foreign = foreign_file(&s);
    std::fs::create_dir(s.state_dir()).unwrap();
    let last = s.state_dir().join("sync.last");
    std::os::unix::fs::symlink(&foreign, &last).unwrap();
    s.sync(&[])
        .assert_code(111)
        .assert_stderr_contains("sync.last is a symlink: refused");
    assert_untouched(&foreign);
    assert_eq!(mailbox_count(s.db()), 0);

    // --force does not read it; recording the run replaces the link, not its target
    s.sync(&["--force"]).assert_code(0);
    assert_untouched(&foreign);
    assert!(!std::fs::symlink_metadata(&last).unwrap().is_symlink());
    assert!(s.last_run().is_some());
}

#[test]
fn temporary_files_left_by_a_crashed_run_do_not_break_the_next() {
    let s = SyncEnv::new(&[bob()]);
    let foreign = foreign_file(&s);
    let dir = s.state_dir();
    std::fs::create_dir(&dir).unwrap();
    // the fixed name older versions wrote through, planted as a symlink, and a random-named leftover
    std::os::unix::fs::symlink(&foreign, dir.join("sync.last.tmp")).unwrap();
    std::fs::write(dir.join("sync.last.tmp.0123456789abcdef"), "17").unwrap();
    s.sync(&[]).assert_code(0);
    assert_untouched(&foreign);
    assert!(
        s.last_run()
            .is_some_and(|t| t.trim().parse::<u64>().is_ok())
    );
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["sync.last", "sync.lock"]);
}

#[test]
fn dry_run_reports_and_writes_nothing() {
    let mut small = DomainRow::from_golden(&golden());
    small.domain = "small.example".into();
    small.mailboxes = 0;
    let s = SyncEnv::new(&[
        bob(),
        user("carol", "contractor"),
        LdapUser::new("u1", "u1@small.example", PW).employee_type("staff"),
    ]);
    small.insert(s.db());
    s.db().add_mailbox(&Mailbox::new(BOB));
    let before = snapshot(s.db());
    let out = s.sync(&["--dry-run"]);
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("sync dry-run user=bob@example.org result=reapplied reason=\"would re-apply template StaffUI\""),
        "{out}"
    );
    assert!(
        out.stdout.contains(
            "sync dry-run user=carol@example.org result=created reason=\"would create the mailbox from template Default\""
        ),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("sync dry-run user=u1@small.example result=failed reason=\"mailbox limit"),
        "{out}"
    );
    assert_summary(
        &out,
        &[
            ("created", 1),
            ("reapplied", 1),
            ("unchanged", 0),
            ("skipped", 0),
            ("failed", 1),
            ("entries", 3),
        ],
    );
    assert_eq!(snapshot(s.db()), before);
    assert!(!s.state_dir().exists(), "a dry run keeps no state");

    // and the real run does what the dry run said it would
    let predicted = summary(&out);
    let out = s.sync(&[]);
    out.assert_code(0);
    assert_eq!(summary(&out), predicted, "{out}");
    assert_eq!(usernames(s.db()), [BOB, "carol@example.org"]);
}

// ---------------------------------------------------------------------------------------------
// Faults and configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn ldap_or_database_down_is_111_and_not_recorded() {
    let mut s = SyncEnv::new(&[bob()]);
    s.sync(&[]).assert_code(0);
    let stamp = s.last_run().expect("recorded");

    let ldap = s.env.cfg["ldap"].clone();
    s.env.ldap_at(&["127.0.0.1"], dead_port());
    s.env.ldap.add_user(&user("carol", "staff"));
    let out = s.sync(&["--force"]);
    out.assert_code(111)
        .assert_stderr_contains("sync result=tempfail reason=\"all LDAP hosts unreachable")
        .assert_stderr_lacks(" created=");
    assert_eq!(
        s.last_run(),
        Some(stamp.clone()),
        "a failed run is not recorded"
    );

    s.env.cfg["ldap"] = ldap;
    s.env.cfg["database"]["port"] = json!(dead_port());
    let out = s.sync(&["--force"]);
    out.assert_code(111)
        .assert_stderr_contains("sync result=tempfail reason=\"database unreachable")
        .assert_never_printed(SVC_PW);
    assert_eq!(s.last_run(), Some(stamp));
    assert_eq!(usernames(s.db()), [BOB]);
}

#[test]
fn sync_off_says_so_and_touches_nothing() {
    let mut s = SyncEnv::new(&[bob()]);
    s.env.cfg["sync"] =
        json!({ "import_users": false, "periodic_full_sync": false, "interval_minutes": 15 });
    let out = s.sync(&["--force"]);
    out.assert_code(0);
    assert_eq!(
        out.stdout.trim(),
        "sync is off (sync.import_users and sync.periodic_full_sync are false)"
    );
    assert_eq!(mailbox_count(s.db()), 0);
    assert!(!s.state_dir().exists());
    // the default config has the sync off too
    s.env.cfg.as_object_mut().unwrap().remove("sync");
    s.sync(&[]).assert_code(0);
}

#[test]
fn broken_config_is_111() {
    let s = SyncEnv::new(&[]);
    let dir = s.state_dir();
    let out = Run::subcommand(&s.env.cfg, &["sync", "--state-dir", dir.to_str().unwrap()])
        .config_yaml("sync: { import_users: yes, nonsense: 1 }\n")
        .run();
    out.assert_code(111)
        .assert_stderr_contains("sync result=tempfail");
}
