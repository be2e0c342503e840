#!/usr/bin/env bash
# Re-creates vendor/mysql_common: mysql_common as published on crates.io plus
# vendor/mysql_common.patch (see vendor/README.md).
#
#   scripts/revendor-mysql-common.sh           replace vendor/mysql_common with a fresh copy
#   scripts/revendor-mysql-common.sh --check   build the copy in a temp dir and compare it with
#                                              vendor/mysql_common (diff -r); change nothing
#
# The crate comes through cargo itself: a throwaway project depending on exactly that version,
# `cargo fetch`, which downloads the .crate into cargo's cache and checks it against the
# checksum in the crates.io index.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
VERSION=0.37.3

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo new --quiet --lib --vcs none "$work/fetch"
echo "mysql_common = { version = \"=$VERSION\", default-features = false }" >>"$work/fetch/Cargo.toml"
host=$(rustc -vV | sed -n 's/^host: //p')
(cd "$work/fetch" && cargo fetch --quiet --target "$host")
crate=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/cache" -name "mysql_common-$VERSION.crate" | head -n 1)
[ -n "$crate" ] || { echo "mysql_common-$VERSION.crate not in cargo's cache" >&2; exit 1; }

tar -xzf "$crate" -C "$work"
tree="$work/mysql_common-$VERSION"
# Packaging files the vendored copy leaves out: the library's own Cargo.lock (unused in a
# dependency), its .gitignore (it would hide files of the copy from git) and the VCS note.
rm -f "$tree/Cargo.lock" "$tree/.gitignore" "$tree/.cargo_vcs_info.json"
(cd "$tree" && git apply -p1 "$repo/vendor/mysql_common.patch")

if $check; then
  diff -r "$tree" vendor/mysql_common
  echo "vendor/mysql_common is mysql_common $VERSION + vendor/mysql_common.patch"
else
  rm -rf vendor/mysql_common
  cp -a "$tree" vendor/mysql_common
  echo "vendor/mysql_common re-created from mysql_common $VERSION + vendor/mysql_common.patch"
fi
