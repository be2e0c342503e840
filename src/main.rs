use clap::Parser;

fn main() -> std::process::ExitCode {
    mailcow_ldap_auth::run(mailcow_ldap_auth::cli::Cli::parse())
}
