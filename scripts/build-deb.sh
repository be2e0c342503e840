#!/usr/bin/env bash
# Builds the Debian package into target/debian/ with cargo-deb (scripts/install-test-deps.sh
# installs it; the package layout is [package.metadata.deb] in Cargo.toml) and prints its path
# as the last line.
#
# The contrib/ snippets name the hand-install paths /usr/local/bin/mailcow-ldap-auth and
# /usr/local/share/mailcow-ldap-auth/. The package ships copies naming /usr/bin and
# /usr/share, staged in target/deb-contrib/: share/ becomes /usr/share/mailcow-ldap-auth/
# (dovecot/, cron/, postfix/, and the Lua scripts at its top, where the snippets load them
# from), systemd/ the units.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=target/deb-contrib
rm -rf "$stage"
mkdir -p "$stage/share"
cp -R contrib/dovecot contrib/cron contrib/postfix "$stage/share/"
cp -R contrib/systemd "$stage/"
find "$stage/share/dovecot" -name '*.lua' -exec mv -t "$stage/share/" {} +
find "$stage/share/dovecot" -type d -empty -delete
grep -rlZ -E '/usr/local/(bin|share)/mailcow-ldap-auth' "$stage" |
  xargs -0 -r sed -i -E 's#/usr/local/(bin|share)/mailcow-ldap-auth#/usr/\1/mailcow-ldap-auth#g'
cargo deb --locked "$@"
