#!/usr/bin/env bash
# `watch --once` over a generated fleet, for comparing builds side by side without the daemon's loop:
#   bench/watch-once.sh N RUNS BIN [BIN…]
# (`LATENCY_MS=100` the delay the sandbox adds to every HTTP answer, default 0). Never run by .ci/run.
#
# One `permatoken sandbox --extra-tokens N` (the first BIN's) and the fleet of bench/fleet.sh (N
# services, each with its own 0600 `.env` holding its token and the app's id and secret, one
# `[[token]]` each). Then RUNS times, for `batch_checks = true` and `false`, for each BIN in turn: a
# fresh SQLite state, `watch --once` on it (pass 1, every token new), and again on the same state
# (pass 2, a restart's round). Each line: the binary, the mode, the pass, and `/usr/bin/time`'s wall
# seconds, user and system CPU seconds, and peak resident memory in KiB.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { echo "usage: bench/watch-once.sh N RUNS BIN [BIN…]" >&2; exit 2; }
n=$1; runs=$2; shift 2
latency=${LATENCY_MS:-0}
work=$(mktemp -d)
sandbox_pid=
trap '[ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null; rm -rf "$work"' EXIT
"$1" sandbox --latency-ms "$latency" --extra-tokens "$n" --extra-tokens-json "$work/tokens.json" >"$work/sandbox.txt" &
sandbox_pid=$!
for _ in $(seq 600); do grep -q '^Admin API' "$work/sandbox.txt" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'PERMATOKEN_GRAPH_URL=[^ ]*' "$work/sandbox.txt" | cut -d= -f2)
app_id=$(grep -o 'FACEBOOK_APP_ID=[0-9]*' "$work/sandbox.txt" | cut -d= -f2)
app_secret=$(grep -o 'FACEBOOK_APP_SECRET=[0-9a-f]*' "$work/sandbox.txt" | cut -d= -f2)
python3 - "$work" "$app_id" "$app_secret" <<'PY'
import json, os, sys
dir, app_id, app_secret = sys.argv[1:]
tokens = json.load(open(os.path.join(dir, "tokens.json")))["tokens"]
os.umask(0o077)
entries = []
for i, token in enumerate(tokens):
    svc = os.path.join(dir, "fleet", f"svc-{i:05}")
    os.makedirs(svc)
    with open(os.path.join(svc, ".env"), "w") as env:
        env.write(f"WHATSAPP_ACCESS_TOKEN={token}\nFACEBOOK_APP_ID={app_id}\nFACEBOOK_APP_SECRET={app_secret}\n")
    entries.append(f"\n[[token]]\nname = \"svc-{i:05}\"\nenv_file = \"fleet/svc-{i:05}/.env\"\n")
for mode in ("true", "false"):
    with open(os.path.join(dir, f"batch-{mode}.toml"), "w") as config:
        config.write(f"[defaults]\ninterval = \"1m\"\njitter = \"0s\"\nbatch_checks = {mode}\n")
        config.writelines(entries)
PY
echo "# $(nproc) cores; $n tokens, $latency ms per HTTP answer; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# binary, batch_checks, pass: wall s, user s, system s, peak RSS KiB"
for _ in $(seq "$runs"); do
  for mode in true false; do
    for bin in "$@"; do
      rm -f "$work"/state.db*
      for pass in 1 2; do
        figures=$(PERMATOKEN_GRAPH_URL=$url /usr/bin/time -f "%e %U %S %M" "$bin" watch --once \
          --config "$work/batch-$mode.toml" --state "$work/state.db" 2>&1 >/dev/null | tail -1)
        echo "$bin batch_checks=$mode pass=$pass: $figures"
      done
    done
  done
done
