#!/usr/bin/env bash
# The whole test suite, from a fresh clone: `bash scripts/test.sh`.
#
# It provisions what the tests need and fails loudly when something is
# missing. Today (Mode 1) that is only the Rust toolchain: the tests spawn the
# real binary against temporary homes. Later modes add their services here
# (a Python venv with moto for S3, a Postgres database per test).
#
# Environment:
#   SPARKWING_FUZZ_SECONDS=N  also run every fuzz target for N seconds
#                             (needs cargo-fuzz; installed when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line with the totals over every test binary.
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$log")
[ "$rc" -eq 0 ] || { echo "tests: ${passed:-0} passed, ${failed:-?} failed"; exit "$rc"; }
[ "${passed:-0}" -gt 0 ] || { echo "no tests ran" >&2; exit 1; }

step "fuzz targets compile"
cargo check --manifest-path fuzz/Cargo.toml --bins

if [ -n "${SPARKWING_FUZZ_SECONDS:-}" ]; then
  step "fuzz for ${SPARKWING_FUZZ_SECONDS}s per target"
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
  for t in pipeline_parse profile_parse duration_parse outbox_payloads; do
    mkdir -p "fuzz/corpus/$t"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$SPARKWING_FUZZ_SECONDS")
  done
fi

echo
echo "tests: $passed passed, $failed failed"
