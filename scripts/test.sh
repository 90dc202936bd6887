#!/usr/bin/env bash
# The whole test suite, from a fresh clone: `bash scripts/test.sh`.
#
# It provisions what the tests need and fails loudly when something is
# missing: the Rust toolchain, and a Python venv (.venv) with moto, the
# S3-protocol server the S3 tests start on free ports (one bucket per test),
# and Debian's chromium + chromedriver for the dashboard's browser tests.
# Under CI=true a test that cannot find moto or chromium fails instead of
# skipping.
#
# Environment:
#   SPARKWING_FUZZ_SECONDS=N  also run every fuzz target for N seconds
#                             (needs cargo-fuzz; installed when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

step "provision: moto (an S3-protocol server) in .venv"
if [ ! -x .venv/bin/moto_server ]; then
  command -v python3 >/dev/null || { echo "python3 not found: install Python 3 (the S3 tests run moto)" >&2; exit 1; }
  python3 -m venv .venv
  .venv/bin/pip install --quiet 'moto[server]'
fi
export SPARKWING_TEST_MOTO="$PWD/.venv/bin/moto_server"

step "provision: chromium and chromedriver (the dashboard's browser tests)"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if command -v apt-get >/dev/null; then
    sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null \
      || { $sudo_ apt-get update >/dev/null && $sudo_ apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }
  else
    echo "chromium and chromedriver are missing and apt-get is not available: install them (Debian: chromium chromium-driver)" >&2
    [ "${CI:-}" = "true" ] && exit 1
  fi
fi

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
  for t in pipeline_parse profile_parse duration_parse outbox_payloads log_html web_spec remote_run_doc remote_manifest; do
    mkdir -p "fuzz/corpus/$t"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$SPARKWING_FUZZ_SECONDS")
  done
fi

echo
echo "tests: $passed passed, $failed failed"
