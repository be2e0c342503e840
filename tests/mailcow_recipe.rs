//! contrib/mailcow/ without Docker (no engine here; the image is built on the mailcow host):
//! the compose override parses and names files that exist and agree with each other, the
//! Dockerfile builds the release binary as the Debian package (and the tests) build it, and
//! the example config is one the program accepts.

use serde_norway::Value;
use std::path::Path;

const OVERRIDE: &str = include_str!("../contrib/mailcow/docker-compose.override.yml");
const DOCKERFILE: &str = include_str!("../contrib/mailcow/Dockerfile");
const WRAPPER: &str = include_str!("../contrib/mailcow/passwd-verify.lua");
const BUILD_DEB: &str = include_str!("../scripts/build-deb.sh");
const CARGO_TOML: &str = include_str!("../Cargo.toml");
const README: &str = include_str!("../README.md");
const SERVICE: &str = "mailcow-ldap-auth";

fn compose() -> Value {
    serde_norway::from_str(OVERRIDE).expect("docker-compose.override.yml is YAML")
}

/// The `source:target[:options]` volume entries of a service, as (source, target).
fn mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .map(|v| {
            let v = v.as_str().expect("short volume syntax");
            // `${VAR:-default}` holds a colon of its own
            let variable = v.find('}').map_or(0, |end| end + 1);
            let (source, rest) = v.split_at(variable + v[variable..].find(':').expect(v));
            let target = rest[1..].split(':').next().unwrap();
            (source.to_owned(), target.to_owned())
        })
        .collect()
}

/// The repository path a mount source names (`${MAILCOW_LDAP_AUTH_SRC…}/path`).
fn in_repo(source: &str) -> &str {
    source
        .split_once("}/")
        .map(|(_, path)| path)
        .unwrap_or_else(|| panic!("{source} is not in the repository"))
}

/// What stands between `prefix` and `suffix` on the first (trimmed) line of `text` that
/// starts with `prefix`.
fn line_value<'t>(text: &'t str, prefix: &str, suffix: &str) -> &'t str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|rest| rest.split_once(suffix))
        .map(|(value, _)| value)
        .unwrap_or_else(|| panic!("no line {prefix}…{suffix}"))
}

/// The Lua string value of `key = "…"` in the wrapper.
fn wrapper_setting(key: &str) -> &'static str {
    line_value(WRAPPER, &format!("{key} = \""), "\"")
}

#[test]
fn the_override_adds_serve_on_mailcows_network_with_its_database_socket() {
    let compose = compose();
    let service = &compose["services"][SERVICE];
    assert_eq!(service["command"][0].as_str(), Some("serve"));
    assert!(service["networks"]["mailcow-network"].is_mapping());
    let dockerfile = service["build"]["dockerfile"].as_str().unwrap();
    assert_eq!(dockerfile, "contrib/mailcow/Dockerfile");
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(dockerfile)
            .is_file()
    );
    let mounts = mounts(service);
    // mailcow's own socket volume, where mailcow's containers mount it
    assert!(mounts.contains(&("mysql-socket-vol-1".into(), "/var/run/mysqld/".into())));
    assert!(mounts.contains(&(
        "./data/conf/mailcow-ldap-auth".into(),
        "/etc/mailcow-ldap-auth".into()
    )));
    assert!(DOCKERFILE.contains(r#""--config", "/etc/mailcow-ldap-auth/config.yml""#));
    // the sync job runs the same binary with the same config
    let sync = service["labels"]["ofelia.job-exec.mailcow_ldap_auth_sync.command"]
        .as_str()
        .unwrap();
    assert_eq!(
        sync,
        "/usr/local/bin/mailcow-ldap-auth --config /etc/mailcow-ldap-auth/config.yml sync"
    );
}

#[test]
fn dovecot_gets_the_script_over_mailcows_and_the_token() {
    let compose = compose();
    let mounts = mounts(&compose["services"]["dovecot-mailcow"]);
    let source_of = |target: &str| {
        mounts
            .iter()
            .find(|(_, t)| t == target)
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| panic!("nothing mounted at {target}"))
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // the wrapper: the README's copy, mounted writable (mailcow's entrypoint runs under
    // `set -e` and chowns, chmods and touches it)
    let entry = compose["services"]["dovecot-mailcow"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|v| v.contains(":/etc/dovecot/auth/passwd-verify.lua"))
        .expect("the wrapper mount");
    assert_eq!(
        entry,
        "./data/conf/mailcow-ldap-auth/passwd-verify.lua:/etc/dovecot/auth/passwd-verify.lua:z"
    );
    assert!(README.contains(
        "cp /opt/mailcow-ldap-auth/contrib/mailcow/passwd-verify.lua data/conf/mailcow-ldap-auth/"
    ));
    // the wrapper loads the script from where the override mounts it
    let loaded = line_value(WRAPPER, "dofile(\"", "\")");
    let script = source_of(loaded);
    assert_eq!(
        in_repo(&script),
        "contrib/dovecot/lua/mailcow-ldap-auth.lua"
    );
    assert!(root.join(in_repo(&script)).is_file());
    // the token the script reads is serve's
    let token = wrapper_setting("token_file");
    assert_eq!(
        source_of(token),
        "./data/conf/mailcow-ldap-auth/token",
        "the token mount"
    );
    assert_eq!(wrapper_setting("url"), "http://mailcow-ldap-auth:9077/");
    assert_eq!(wrapper_setting("mailcow_url"), "https://nginx:9082");
}

#[test]
fn the_dockerfile_builds_the_release_binary_as_the_package_does() {
    let run_lines: Vec<&str> = DOCKERFILE
        .lines()
        .filter_map(|l| l.strip_prefix("RUN cargo "))
        .collect();
    assert_eq!(
        run_lines,
        ["build --release --locked --bin mailcow-ldap-auth"]
    );
    // cargo deb builds with `cargo build --release` plus the flags it is given
    assert!(BUILD_DEB.contains("cargo deb --locked"));
    assert!(DOCKERFILE.contains(
        "COPY --from=builder /src/target/release/mailcow-ldap-auth /usr/local/bin/mailcow-ldap-auth"
    ));
    // the builder is the oldest Rust the crate supports
    let rust_version = line_value(CARGO_TOML, "rust-version = \"", "\"");
    assert!(
        DOCKERFILE.contains(&format!(
            "FROM rust:{rust_version}-slim-bookworm AS builder"
        )),
        "the builder image must be Rust {rust_version}"
    );
    assert!(DOCKERFILE.contains("FROM debian:bookworm-slim"));
    // the context (the repository root) leaves out the build output, which is gigabytes
    let ignored = include_str!("../.dockerignore");
    assert!(ignored.lines().any(|l| l == "/target"));
}

#[test]
fn the_example_config_is_accepted_and_serve_listens_where_the_script_asks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/mailcow/config.yml");
    let text = std::fs::read_to_string(&path).expect("read contrib/mailcow/config.yml");
    let config = mailcow_ldap_auth::config::Config::from_yaml(&text, &path)
        .expect("contrib/mailcow/config.yml");
    assert!(config.from_mailcow.is_some());
    let port = wrapper_setting("url")
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap();
    assert_eq!(config.serve.listen, format!("0.0.0.0:{port}"));
    assert_eq!(
        config.serve.token_file.as_deref(),
        Some(Path::new(wrapper_setting("token_file")))
    );
}
