#!/usr/bin/env bash
# Builds the Debian package into target/debian/ with cargo-deb (scripts/install-test-deps.sh
# installs it; the package layout is [package.metadata.deb] in Cargo.toml).
# The contrib/ snippets name the hand-installed /usr/local/bin/mailcow-ldap-auth; the package
# ships copies that name /usr/bin/mailcow-ldap-auth, staged in target/deb-contrib/.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=target/deb-contrib
rm -rf "$stage"
mkdir -p "$stage"
cp -R contrib/dovecot contrib/systemd contrib/cron contrib/postfix "$stage"/
grep -rlZ /usr/local/bin/mailcow-ldap-auth "$stage" |
  xargs -0 -r sed -i 's#/usr/local/bin/mailcow-ldap-auth#/usr/bin/mailcow-ldap-auth#g'
cargo deb --locked "$@"
