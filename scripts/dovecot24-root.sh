#!/usr/bin/env bash
# A Debian 13 (trixie) root holding Dovecot 2.4.1 with its Lua auth module, for the Dovecot 2.4
# tests, the 2.4 demo and the benchmark on a Debian 12 host. No mounts are needed: Dovecot runs
# there as `chroot ROOT env -i … dovecot -F -c …` and shares the host's loopback.
#
#   scripts/dovecot24-root.sh          build it once, print its path
#
# The root lives outside the repository (MLA_DOVECOT24_ROOT, default
# /var/cache/mailcow-ldap-auth/trixie-dovecot-2.4.1) and is rebuilt only when it is missing or
# incomplete: it is built in a temporary directory beside it and renamed into place after a
# stamp file recording the package list was written, so a build that died leaves nothing that
# looks finished. A lock serialises concurrent callers (parallel test binaries, CI jobs).
# Needs root and debootstrap (scripts/install-test-deps.sh installs it).
set -euo pipefail

ROOT=${MLA_DOVECOT24_ROOT:-/var/cache/mailcow-ldap-auth/trixie-dovecot-2.4.1}
MIRROR=${MLA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# dovecot-core carries the quota plugin; /bin/sh (dash, in minbase) runs the Lua script's popen.
PACKAGES=dovecot-core,dovecot-imapd,dovecot-pop3d,dovecot-auth-lua,lua-socket
STAMP=.mailcow-ldap-auth-root
WANT="trixie $PACKAGES"

complete() { [ "$(cat "$ROOT/$STAMP" 2>/dev/null)" = "$WANT" ]; }

if complete; then echo "$ROOT"; exit 0; fi

[ "$(id -u)" = 0 ] || { echo "dovecot24-root: building $ROOT needs root" >&2; exit 1; }
command -v debootstrap >/dev/null ||
  { echo "dovecot24-root: debootstrap missing (run scripts/install-test-deps.sh)" >&2; exit 1; }

parent=$(dirname "$ROOT")
mkdir -p "$parent"
exec 9>"$parent/.$(basename "$ROOT").lock"
flock 9
complete && { echo "$ROOT"; exit 0; }      # another caller built it while we waited
rm -rf "$ROOT".build.*                       # left by a killed build (we hold the lock)

start=$(date +%s)
tmp=$(mktemp -d "$ROOT.build.XXXXXX")
trap 'rm -rf "$tmp" "$tmp.log"' EXIT
echo "dovecot24-root: debootstrap trixie ($PACKAGES) into $tmp" >&2
debootstrap --variant=minbase --include="$PACKAGES" trixie "$tmp" "$MIRROR" >"$tmp.log" 2>&1 ||
  { tail -n 30 "$tmp.log" >&2; exit 1; }
rm -f "$tmp.log"
chroot "$tmp" apt-get clean
rm -rf "$tmp/var/lib/apt/lists/"*
# where callers put their per-instance directories (each Dovecot gets its own -c file there)
mkdir -p "$tmp/srv"
chmod 755 "$tmp"
version=$(chroot "$tmp" /usr/sbin/dovecot --version)
case $version in 2.4.*) ;; *) echo "dovecot24-root: got Dovecot $version, want 2.4" >&2; exit 1 ;; esac
echo "$WANT" > "$tmp/$STAMP"
rm -rf "$ROOT"
mv "$tmp" "$ROOT"
trap - EXIT
echo "dovecot24-root: Dovecot $version ready in $ROOT ($(( $(date +%s) - start )) s)" >&2
echo "$ROOT"
