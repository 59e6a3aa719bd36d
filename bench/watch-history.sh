#!/usr/bin/env bash
# `watch`'s memory in a fleet's steady state, when every token has a long check history:
#   bench/watch-history.sh            (N=10000 tokens, HISTORY=200 checks each by default)
# `BIN=PATH` measures that binary instead of building one (for a before/after comparison: the state
# file is filled by this tree's `permatoken-state` example, whose schema both must share).
# Never run by .ci/run.
#
# 1. The fleet of bench/watch.sh (N services, each with its own 0600 `.env`, one `[[token]]` each,
#    interval 1h) against one `permatoken sandbox --extra-tokens N`; a first `watch` run makes one
#    round (every token gets its key and one check in a new state file) and is stopped.
# 2. `crates/state/examples/fill_history.rs` adds HISTORY-2 checks to each token, an hour apart going
#    back from its first one: HISTORY-1 checks each, 2 million rows at the defaults.
# 3. `watch` again on that state: it checks every token at start (one round: HISTORY checks each,
#    what 8 days at `interval = "1h"` leave), sampled from /proc. Printed: the peak resident memory
#    (VmHWM) when the round has finished, then after 5 `/api/tokens` requests (the page's default,
#    the largest page `per_page=500` three times, a search) and 3 `/metrics` scrapes, the peak and the
#    resident memory (VmRSS) then, and the wall time of a `per_page=500` request. The answers are
#    checked: HISTORY chart points for each token shown, N tokens with a check on /metrics. The RSS
#    after each request, and how much of it is anonymous (heap) or file-backed (the binary's code).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-10000}
history=${HISTORY:-200}
[ "$history" -ge 2 ] || { echo "HISTORY must be at least 2" >&2; exit 2; }
if [ -n "${BIN:-}" ]; then bin=$BIN; else cargo build --release --quiet; bin=$PWD/target/release/permatoken; fi
cargo build --release --quiet -p permatoken-state --example fill_history
fill=$PWD/target/release/examples/fill_history

work=$(mktemp -d)
sandbox_pid=
trap '[ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null; rm -rf "$work"' EXIT

echo "## Machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$(uname -sr); $(rustc --version); ${BIN:+binary $BIN, }commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' + uncommitted changes'); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo

dir=$work/fleet
mkdir -p "$dir"
"$bin" sandbox --extra-tokens "$n" --extra-tokens-json "$dir/tokens.json" >"$dir/sandbox.txt" &
sandbox_pid=$!
for _ in $(seq 600); do grep -q '^Scenario tokens' "$dir/sandbox.txt" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'PERMATOKEN_GRAPH_URL=[^ ]*' "$dir/sandbox.txt" | cut -d= -f2)
app_id=$(grep -o 'FACEBOOK_APP_ID=[0-9]*' "$dir/sandbox.txt" | cut -d= -f2)
app_secret=$(grep -o 'FACEBOOK_APP_SECRET=[0-9a-f]*' "$dir/sandbox.txt" | cut -d= -f2)

# The fleet and its configuration, as bench/watch.sh makes them. The secrets go only into the 0600
# .env files.
python3 - "$dir" "$app_id" "$app_secret" <<'EOF'
import json, os, sys
dir, app_id, app_secret = sys.argv[1:]
tokens = json.load(open(os.path.join(dir, "tokens.json")))["tokens"]
os.umask(0o077)
with open(os.path.join(dir, "permatoken.toml"), "w") as config:
    config.write("[defaults]\ninterval = \"1h\"\n")
    for i, token in enumerate(tokens):
        svc = os.path.join(dir, "fleet", f"svc-{i:05}")
        os.makedirs(svc)
        with open(os.path.join(svc, ".env"), "w") as env:
            env.write(f"WHATSAPP_ACCESS_TOKEN={token}\nFACEBOOK_APP_ID={app_id}\nFACEBOOK_APP_SECRET={app_secret}\n")
        config.write(f"\n[[token]]\nname = \"svc-{i:05}\"\nenv_file = \"fleet/svc-{i:05}/.env\"\n")
EOF

# One `watch` run: start it, wait for its first round, then (phase `measure`) measure.
run_watch() {
  PERMATOKEN_GRAPH_URL=$url python3 - "$bin" "$dir" "$n" "$history" "$1" <<'EOF'
import json, os, re, subprocess, sys, time, urllib.request
bin, dir, n, history, phase = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
log = open(os.path.join(dir, f"watch-{phase}.log"), "w+")
p = subprocess.Popen([bin, "watch", "--config", os.path.join(dir, "permatoken.toml"),
                      "--state", os.path.join(dir, "state.db"), "--listen", "127.0.0.1:0"],
                     stdout=log, stderr=log)
def status():
    fields = {}
    for line in open(f"/proc/{p.pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[k] = int(v.split()[0])
    return fields
def mb(kib):
    return f"{kib/1024:.1f} MB"
base = None
while base is None:
    time.sleep(0.05)
    log.seek(0)
    m = re.search(r"on (http://127\.0\.0\.1:\d+)/", log.read())
    base = m and m.group(1)
    if p.poll() is not None: sys.exit("watch stopped:\n" + open(log.name).read())
start = time.monotonic()
while True:
    try:
        if re.search(rb'"last_round_at":\d', urllib.request.urlopen(base + "/healthz", timeout=30).read()):
            break
    except OSError:
        pass
    if p.poll() is not None: sys.exit("watch stopped:\n" + open(log.name).read())
    time.sleep(0.1)
round_wall = time.monotonic() - start
if phase != "measure":
    p.terminate(); p.wait(timeout=60); sys.exit(0)
after_round = status()
steps = []
def get(path):
    t = time.monotonic()
    body = urllib.request.urlopen(base + path, timeout=60).read()
    took = time.monotonic() - t
    steps.append(f"{status()['VmRSS']/1024:.1f}")
    return body, took
# Every token shown has its whole chart.
page, _ = get("/api/tokens?per_page=500")
tokens = json.loads(page)["tokens"]
short = [t["name"] for t in tokens if len(t["history"]) != history]
if len(tokens) != min(n, 500) or short:
    sys.exit(f"expected {min(n, 500)} tokens with {history} chart points each; short: {short[:5]}")
times = []
for path in ["/api/tokens", "/api/tokens?per_page=500&page=2", "/api/tokens?per_page=500&page=3",
             "/api/tokens?q=svc-0999"]:
    body, took = get(path)
    if "per_page=500" in path:
        times.append(took)
metrics = ""
for _ in range(3):
    metrics = get("/metrics")[0].decode()
checks = sum(int(m.group(1)) for m in re.finditer(r'permatoken_checks_total\{.*\} (\d+)', metrics))
if checks != n:
    sys.exit(f"expected {n} checks on /metrics, it says {checks}")
after = status()
p.terminate(); p.wait(timeout=60)
print(f"watch round with {history} checks per token: {round_wall:.2f} s wall; "
      f"peak RSS {mb(after_round['VmHWM'])} (VmHWM {after_round['VmHWM']} KiB)")
print(f"after 5 /api/tokens and 3 /metrics: peak RSS {mb(after['VmHWM'])} (VmHWM {after['VmHWM']} KiB), "
      f"RSS {mb(after['VmRSS'])} (VmRSS {after['VmRSS']} KiB)")
print(f"RSS after each request (MB): {' '.join(steps)}; at the end anonymous {mb(after['RssAnon'])}, "
      f"file-backed {mb(after['RssFile'])}")
print(f"/api/tokens?per_page=500: {len(page)/1024:.0f} KiB, {min(times)*1000:.0f}-{max(times)*1000:.0f} ms")
print(f"state file: {os.path.getsize(os.path.join(dir, 'state.db'))/1024/1024:.1f} MB (+ WAL)")
EOF
}

echo "## $n tokens, $history checks each"
run_watch first
"$fill" "$dir/state.db" "$((history - 2))"
run_watch measure
