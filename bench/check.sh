#!/usr/bin/env bash
# Reproduces the `check` figures of BENCHMARKS.md in one command:  bench/check.sh
#
# Side by side, in one run, against the same sandbox: `permatoken check` and the seed guide's manual way
# (its two curl calls, `/me` then `/debug_token`, run back to back), first as the sandbox answers and then
# with 100 ms of latency injected per call (closer to a round trip to Meta); then the binary's start-up
# time and peak resident memory. Never run by .ci/run.
#
# The curl calls carry the sandbox's own fake tokens on their command line, as the guide's curl does with
# real ones: that is the manual way being measured, and one of the things permatoken exists to avoid.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
cargo build --release --quiet
bin=$PWD/target/release/permatoken
runs=${RUNS:-200}

work=$(mktemp -d)
trap 'kill "$sandbox_pid" 2>/dev/null; rm -rf "$work"' EXIT
"$bin" sandbox >"$work/sandbox.txt" &
sandbox_pid=$!
for _ in $(seq 50); do grep -q '^Scenario tokens' "$work/sandbox.txt" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'PERMATOKEN_GRAPH_URL=[^ ]*' "$work/sandbox.txt" | cut -d= -f2)
app_id=$(grep -o 'FACEBOOK_APP_ID=[0-9]*' "$work/sandbox.txt" | cut -d= -f2)
app_secret=$(grep -o 'FACEBOOK_APP_SECRET=[0-9a-f]*' "$work/sandbox.txt" | cut -d= -f2)
token=$(sed -n '/^  system-user /{n;p;}' "$work/sandbox.txt" | tr -d ' ')
admin=$(grep -o 'x-sandbox-admin: [0-9a-f]*' "$work/sandbox.txt" | head -1)   # the admin API's header
printf 'WHATSAPP_ACCESS_TOKEN=%s\nFACEBOOK_APP_ID=%s\nFACEBOOK_APP_SECRET=%s\n' "$token" "$app_id" "$app_secret" >"$work/.env"
chmod 600 "$work/.env"

check="cd $work && PERMATOKEN_GRAPH_URL=$url $bin check >/dev/null"
curls="curl -sf '$url/v26.0/me?access_token=$token' >/dev/null && curl -sf '$url/debug_token?input_token=$token&access_token=$app_id%7C$app_secret' >/dev/null"
eval "$check" && eval "$curls" || { echo "a command under test failed"; exit 1; }

echo "## Machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$(uname -sr); $(rustc --version); $(curl --version | head -1 | cut -d' ' -f1-2); $(hyperfine --version)"
echo

for latency in 0 100; do
  curl -sf -X POST -H "$admin" -H 'content-type: application/json' -d "{\"latency_ms\":$latency}" "$url/_sandbox/faults" >/dev/null
  echo "## check vs the guide's two curl calls, ${latency} ms injected latency per call ($runs runs each)"
  hyperfine --style none --warmup 10 --runs "$runs" --export-markdown "$work/lat$latency.md" \
    -n 'permatoken check' "$check" -n 'curl /me; curl /debug_token' "$curls" 2>&1 | grep -E '^(Benchmark|  Time|  Range)|±.*times faster' || true
  cat "$work/lat$latency.md"
  echo
done
curl -sf -X POST -H "$admin" -H 'content-type: application/json' -d '{}' "$url/_sandbox/faults" >/dev/null

echo "## Start-up (no shell: hyperfine -N)"
hyperfine --style none -N --warmup 20 --runs 500 --export-markdown "$work/start.md" "$bin --version" >/dev/null 2>&1
cat "$work/start.md"
echo

echo "## Peak resident memory of \`check\` (max over 20 runs)"
peak=0
for _ in $(seq 20); do
  kb=$( (cd "$work" && PERMATOKEN_GRAPH_URL=$url /usr/bin/time -f '%M' "$bin" check 2>&1 >/dev/null) | tail -1)
  (( kb > peak )) && peak=$kb
done
echo "check: ${peak} KiB"
kb=$( /usr/bin/time -f '%M' "$bin" --version 2>&1 >/dev/null | tail -1)
echo "--version: ${kb} KiB"
