#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12: installs the Debian packages the tests need when
# they are missing (slapd, MariaDB, Dovecot 2.3, Postfix, …), then runs every test. The tests
# start their own throwaway servers on loopback high ports in temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
# The [patch] of mysql_common must stay in use: when a `mysql` upgrade needs another
# mysql_common, cargo only warns ("patch … was not used") and builds the unpatched crate.
patched=$(cargo tree --locked -i mysql_common --depth 0 -e normal 2>&1) || true
if grep -qi "was not used" <<<"$patched" ||
  ! grep -q '^mysql_common v.* (.*/vendor/mysql_common)$' <<<"$patched"; then
  printf 'mysql_common is not the patched copy in vendor/ (see vendor/README.md):\n%s\n' "$patched" >&2
  exit 1
fi
# Man pages and completions in contrib/ must match src/cli.rs (regenerate: cargo xtask docs).
cargo xtask docs --check
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked "$@" 2>&1 | tee "$log" || status=$?
# The Debian package (whole-suite runs only): build it, then install, use and purge it.
if [ $# -eq 0 ]; then
  deb=$(bash scripts/build-deb.sh | tail -n 1)
  MAILCOW_LDAP_AUTH_DEB=$deb cargo test --locked --test deb_package -- --ignored 2>&1 |
    tee -a "$log" || status=$?
fi
# One closing line over all test binaries.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
