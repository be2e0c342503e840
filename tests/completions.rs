//! `completions SHELL` prints exactly the scripts checked in under contrib/completions/ (which
//! the Debian package installs; `cargo xtask docs --check` keeps them current with src/cli.rs).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mailcow-ldap-auth");

#[test]
fn completions_print_the_checked_in_scripts() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (shell, file, marker) in [
        ("bash", "mailcow-ldap-auth", "complete -F"),
        ("zsh", "_mailcow-ldap-auth", "#compdef mailcow-ldap-auth"),
        (
            "fish",
            "mailcow-ldap-auth.fish",
            "complete -c mailcow-ldap-auth",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("run the binary");
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(script.contains(marker), "{shell} script lacks {marker:?}");
        assert!(script.contains("test-connection"), "{shell}: subcommands");
        let checked_in = std::fs::read_to_string(format!("{root}/contrib/completions/{file}"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(script, checked_in, "{shell}: run `cargo xtask docs`");
    }
}

#[test]
fn completions_refuse_an_unknown_shell() {
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .expect("run the binary");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
}
