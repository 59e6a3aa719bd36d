#!/usr/bin/env bash
# Reproduces the `doctor` figures of BENCHMARKS.md in one command:  bench/doctor.sh
#
# 1. `doctor --sandbox` (in-process sandbox and a local HTTPS webhook receiver, everything healthy):
#    wall time, against the 2 s target.
# 2. Concurrency: `doctor` against an external sandbox that adds 100 ms to every answer; the items'
#    own times (`elapsed_ms` in --json) added up, against the wall time of the run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
cargo build --release --quiet
bin=$PWD/target/release/permatoken
work=$(mktemp -d)
trap 'kill "$sandbox_pid" 2>/dev/null; rm -rf "$work"' EXIT

echo "## doctor --sandbox, everything healthy (wall time, 50 runs)"
hyperfine --style none -N --warmup 3 --runs 50 --export-markdown "$work/sandbox.md" "$bin doctor --sandbox" >/dev/null 2>&1
cat "$work/sandbox.md"
echo

"$bin" sandbox --latency-ms 100 >"$work/sandbox.txt" &
sandbox_pid=$!
for _ in $(seq 50); do grep -q '^Scenario tokens' "$work/sandbox.txt" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'PERMATOKEN_GRAPH_URL=[^ ]*' "$work/sandbox.txt" | cut -d= -f2)
{
  grep -o 'FACEBOOK_APP_[A-Z]*=[0-9a-f]*' "$work/sandbox.txt"
  echo "WHATSAPP_ACCESS_TOKEN=$(sed -n '/^  system-user /{n;p;}' "$work/sandbox.txt" | tr -d ' ')"
  echo "WHATSAPP_BUSINESS_ACCOUNT_ID=102290129340398"
  echo "WHATSAPP_PHONE_NUMBER_ID=106540352242922"
} >"$work/.env"
chmod 600 "$work/.env"
echo "## doctor with 100 ms per Graph call: items' own times added up vs the run's wall time (10 runs)"
echo "| run | wall ms | sum of items ms | longest item ms | wall / sum |"
echo "|---:|---:|---:|---:|---:|"
for i in $(seq 10); do
  start=$(date +%s%N)
  json=$(cd "$work" && PERMATOKEN_GRAPH_URL=$url "$bin" doctor --json)
  wall=$(( ($(date +%s%N) - start) / 1000000 ))
  sum=$(printf '%s' "$json" | python3 -c 'import json,sys; print(sum(i["elapsed_ms"] for i in json.load(sys.stdin)["items"]))')
  max=$(printf '%s' "$json" | python3 -c 'import json,sys; print(max(i["elapsed_ms"] for i in json.load(sys.stdin)["items"]))')
  echo "| $i | $wall | $sum | $max | $(python3 -c "print(f'{$wall/$sum:.2f}')") |"
done
