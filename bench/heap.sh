#!/usr/bin/env bash
# Reproduces "The heap profile at 100,000, and the allocator" of BENCHMARKS.md:
#   bench/heap.sh BIN OUTDIR [N]
# One `permatoken sandbox` with N extra tokens (default 100,000, 100 ms per answer), a fleet of N env
# files in one [[token_set]] (as bench/fleet.sh makes it), and one `BIN watch` on a fresh SQLite state
# with `interval = "1m"`, run until two rounds have finished (`ROUNDS=`), then its VmHWM/VmRSS.
# By default `watch` runs under heaptrack (the live heap: OUTDIR/ht.zst, read with
#   heaptrack_print -f OUTDIR/ht.zst -p 0 -a 0 -T 0 --flamegraph-cost-type peak -F stacks.txt);
# `WRAP=env` runs it alone, for the resident figures, `WRAP="env MALLOC_ARENA_MAX=1"` with one arena.
# BIN: a release build, with line tables for heaptrack:
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none cargo build --release
# Two builds compared run side by side (two shells), as the figures were. Never run by .ci/run.
set -euo pipefail
bin=$1; out=$2; n=${3:-100000}
mkdir -p "$out"; dir=$(mktemp -d)
"$bin" sandbox --latency-ms 100 --extra-tokens "$n" --extra-tokens-json "$dir/tokens.json" >"$dir/sandbox.txt" &
sp=$!
trap 'kill $sp 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 600); do grep -q '^Admin API' "$dir/sandbox.txt" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'PERMATOKEN_GRAPH_URL=[^ ]*' "$dir/sandbox.txt" | cut -d= -f2)
app_id=$(grep -o 'FACEBOOK_APP_ID=[0-9]*' "$dir/sandbox.txt" | cut -d= -f2)
app_secret=$(grep -o 'FACEBOOK_APP_SECRET=[0-9a-f]*' "$dir/sandbox.txt" | cut -d= -f2)
python3 - "$dir" "$app_id" "$app_secret" <<'PY'
import json, os, sys
dir, app_id, app_secret = sys.argv[1:]
tokens = json.load(open(os.path.join(dir, "tokens.json")))["tokens"]
os.umask(0o077)
for i, token in enumerate(tokens):
    svc = os.path.join(dir, "fleet", f"svc-{i:05}")
    os.makedirs(svc)
    open(os.path.join(svc, ".env"), "w").write(f"WHATSAPP_ACCESS_TOKEN={token}\nFACEBOOK_APP_ID={app_id}\nFACEBOOK_APP_SECRET={app_secret}\n")
open(os.path.join(dir, "w.toml"), "w").write('[defaults]\ninterval = "1m"\njitter = "0s"\nbatch_checks = true\n\n[[token_set]]\nname = "svc"\nenv_files = "fleet/*/.env"\n')
PY
cd "$dir"
PERMATOKEN_GRAPH_URL=$url ${WRAP:-heaptrack -o $out/ht} "$bin" watch --config w.toml --state s.db --listen 127.0.0.1:0 >"$out/watch.log" 2>&1 &
wp=$!
base=
for _ in $(seq 3000); do base=$(grep -o 'on http://127\.0\.0\.1:[0-9]*' "$out/watch.log" | head -1 | cut -d' ' -f2) && [ -n "$base" ] && break; sleep 0.1; done
echo "base $base"
rounds=0; last=
t0=$(date +%s)
while [ $rounds -lt ${ROUNDS:-2} ]; do
  at=$(curl -s --max-time 5 "$base/healthz" | grep -o '"last_round_at":[0-9]*' | grep -o '[0-9]*$' || true)
  if [ -n "$at" ] && [ "$at" != "$last" ]; then rounds=$((rounds+1)); last=$at; echo "round $rounds done at +$(( $(date +%s)-t0 )) s"; fi
  sleep 1
done
[ -n "${SCRAPE:-}" ] && curl -s --max-time 120 "$base/metrics" | wc -c
pid=$(pgrep -f "[w]atch --config w.toml --state" | head -1 || true)
[ -n "$pid" ] && grep -E 'VmHWM|VmRSS' /proc/$pid/status
kill -INT $pid 2>/dev/null || true
wait $wp || true
