#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12: installs the Debian packages the tests need when
# they are missing (slapd, MariaDB, Dovecot 2.3, Postfix, …), then runs every test. The tests
# start their own throwaway servers on loopback high ports in temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo test --locked "$@"
