//! Project chores, run as `cargo xtask <task>` (alias in .cargo/config.toml).
//!
//! `docs`: writes the man pages (`contrib/man/*.1`, one per command and subcommand) and the
//! shell completions (`contrib/completions/`) generated from the clap definitions in
//! src/cli.rs. `docs --check` writes nothing and fails when a checked-in file differs, is
//! missing or is left over (scripts/test.sh runs it, so CI catches a forgotten regeneration).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, ValueEnum};
use mailcow_ldap_auth::cli::Cli;
use mailcow_ldap_auth::commands::completions::{self, Shell};
use mailcow_ldap_auth::config::DEFAULT_PATH;
use mailcow_ldap_auth::sync::DEFAULT_STATE_DIR;
use roff::{Roff, bold, roman};

const MAN_DIR: &str = "contrib/man";
const COMPLETIONS_DIR: &str = "contrib/completions";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["docs"] => false,
        ["docs", "--check"] => true,
        _ => {
            eprintln!("usage: cargo xtask docs [--check]");
            return ExitCode::from(2);
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lies in the project root");
    let wanted = generated_files();
    let result = if check {
        check_files(root, &wanted)
    } else {
        write_files(root, &wanted)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Every generated file, by its path relative to the project root.
fn generated_files() -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut command = Cli::command().disable_help_subcommand(true);
    // build() names subcommands "mailcow-ldap-auth-login" etc., which the man pages use.
    command.build();
    add_man_pages(&command, None, &mut files);
    for shell in Shell::value_variants() {
        let mut script = Vec::new();
        completions::write(*shell, &mut script);
        files.insert(Path::new(COMPLETIONS_DIR).join(shell.file_name()), script);
    }
    files
}

/// The page of `command` and of each of its subcommands; `main` is the program's own command
/// when `command` is a subcommand.
fn add_man_pages(
    command: &clap::Command,
    main: Option<&str>,
    files: &mut BTreeMap<PathBuf, Vec<u8>>,
) {
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render(&mut page).expect("render into memory");
    // What clap does not know: exit codes, files, the other pages.
    let mut extra = Roff::new();
    match main {
        None => {
            main_page_sections(&mut extra);
            let mut pages: Vec<String> = command
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| format!("{}-{}(1)", command.get_name(), s.get_name()))
                .collect();
            pages.push("dovecot(1)".into());
            see_also(&mut extra, &pages);
        }
        Some(main) => see_also(&mut extra, &[format!("{main}(1)")]),
    }
    page.extend(extra.render().into_bytes());
    files.insert(Path::new(MAN_DIR).join(man.get_filename()), page);
    let main = main.unwrap_or(command.get_name());
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        add_man_pages(sub, Some(main), files);
    }
}

fn main_page_sections(roff: &mut Roff) {
    let mut entries = |heading: &str, items: &[(&str, &str)]| {
        roff.control("SH", [heading]);
        for (term, text) in items {
            roff.control("TP", [])
                .text([bold(*term)])
                .text([roman(*text)]);
        }
    };
    entries(
        "EXIT STATUS",
        &[
            ("0", "Success (checkpassword: through the reply program)."),
            (
                "1",
                "Wrong password, unknown user or refused login; authsource: an address was refused.",
            ),
            (
                "2",
                "Misuse (checkpassword: fd 3 missing or malformed); lookup mode, through the reply \
                 program: the mailbox exists.",
            ),
            ("3", "Lookup mode: no such mailbox."),
            (
                "111",
                "Temporary failure: LDAP, database, TLS, timeout, deadline or configuration \
                 fault; test-connection: a check failed.",
            ),
        ],
    );
    entries(
        "FILES",
        &[
            (
                DEFAULT_PATH,
                "The configuration (YAML). It holds the LDAP and database passwords: mode 0640, \
                 owner root, group dovecot.",
            ),
            (
                DEFAULT_STATE_DIR,
                "The sync lock and the start time of the last completed sync run.",
            ),
            (
                "/usr/share/mailcow-ldap-auth/",
                "Dovecot, Postfix and cron snippets (Debian package).",
            ),
            (
                "/usr/share/doc/mailcow-ldap-auth/README.md",
                "The full documentation: configuration reference, log lines, troubleshooting.",
            ),
        ],
    );
}

fn see_also(roff: &mut Roff, pages: &[String]) {
    roff.control("SH", ["SEE ALSO"])
        .text([roman(pages.join(", "))]);
}

/// The files now in the generated directories.
fn existing_files(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for dir in [MAN_DIR, COMPLETIONS_DIR] {
        let entries = match std::fs::read_dir(root.join(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{dir}: {e}")),
        };
        for entry in entries {
            let entry = entry.map_err(|e| format!("{dir}: {e}"))?;
            found.push(Path::new(dir).join(entry.file_name()));
        }
    }
    Ok(found)
}

fn write_files(root: &Path, wanted: &BTreeMap<PathBuf, Vec<u8>>) -> Result<(), String> {
    for stale in existing_files(root)?
        .into_iter()
        .filter(|p| !wanted.contains_key(p))
    {
        std::fs::remove_file(root.join(&stale)).map_err(|e| format!("{}: {e}", stale.display()))?;
        println!("removed {}", stale.display());
    }
    for (path, content) in wanted {
        let full = root.join(path);
        if std::fs::read(&full).ok().as_ref() == Some(content) {
            continue;
        }
        std::fs::create_dir_all(full.parent().expect("file in a directory"))
            .and_then(|()| std::fs::write(&full, content))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn check_files(root: &Path, wanted: &BTreeMap<PathBuf, Vec<u8>>) -> Result<(), String> {
    let mut problems: Vec<String> = existing_files(root)?
        .into_iter()
        .filter(|p| !wanted.contains_key(p))
        .map(|p| format!("{}: left over", p.display()))
        .collect();
    for (path, content) in wanted {
        match std::fs::read(root.join(path)) {
            Ok(found) if &found == content => {}
            Ok(_) => problems.push(format!("{}: out of date", path.display())),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "generated files differ from src/cli.rs:\n  {}\nrun `cargo xtask docs` and commit the result",
        problems.join("\n  ")
    ))
}
