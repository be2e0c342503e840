#!/bin/sh
# Builds the cargo-fuzz targets (fuzz/) and runs each for SECONDS (default 600), one after the
# other, on the committed seeds plus the corpus earlier runs grew (fuzz/corpus, git-ignored).
# Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz --locked
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 60 address config
# A crash stops the script with libFuzzer's report; the input is saved under fuzz/artifacts/.
set -eu
cd "$(dirname "$0")/.."

seconds=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-$(cargo +nightly fuzz list)}

cargo +nightly fuzz build
for target in $targets; do
    mkdir -p "fuzz/corpus/$target"
    echo "== $target: ${seconds}s" >&2
    # -print_final_stats: the exec count and coverage docs/reliability.md quotes.
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
