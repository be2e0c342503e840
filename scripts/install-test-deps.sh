#!/usr/bin/env bash
# Installs the Debian 12 packages the test suite and the demo need, when they are missing,
# builds (once) the trixie root with Dovecot 2.4.1 the Dovecot 2.4 tests run in
# (scripts/dovecot24-root.sh), and installs cargo-deb (scripts/build-deb.sh). Blocks service
# starts during the install: every server the tests use is a throwaway instance they start
# themselves, never the system one.
set -euo pipefail

packages=(slapd ldap-utils openssl mariadb-server-core mariadb-client-core
          dovecot-core dovecot-imapd dovecot-pop3d dovecot-managesieved dovecot-sieve
          dovecot-auth-lua lua5.4 dovecot-ldap lua-socket lua-sec lua-cjson
          postfix redis-server python3 pkg-config build-essential debootstrap time)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
install_missing() {
  if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi

  echo "install-test-deps: installing ${missing[*]}" >&2
  echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections
  echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
[ ${#missing[@]} -eq 0 ] || install_missing
bash "$(dirname "$0")/dovecot24-root.sh" >/dev/null
# After the packages (build-essential): cargo-deb's dependencies compile C code.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "install-test-deps: installing cargo-deb" >&2
  cargo install --locked --quiet cargo-deb --version 3.8.0
fi
