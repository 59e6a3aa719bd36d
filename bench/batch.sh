#!/usr/bin/env bash
# The client's batched `/debug_token` against one call per token, in one command:  bench/batch.sh [N] [LATENCY_MS]
#
# Builds and runs crates/cli/examples/batch_vs_single.rs (release): N extra sandbox tokens (default
# 1000) inspected once in Graph batches of 50 and once one call after another, the in-process sandbox
# answering each HTTP request after LATENCY_MS milliseconds (default 0). Prints the machine and both
# figures. A rough figure of the client alone; `bench/fleet.sh` measures the daemon. Never run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
latency=${2:-0}
cargo build --release --quiet -p permatoken --example batch_vs_single

echo "## Machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$(uname -sr); $(rustc --version); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "## $n tokens, ${latency} ms per HTTP answer"
target/release/examples/batch_vs_single "$n" "$latency"
