#!/usr/bin/env bash
# Reproduces the `watch` figures of BENCHMARKS.md in one command:  bench/watch.sh
# (`N=1000 bench/watch.sh` or `N=10000 bench/watch.sh` for one fleet size, both by default;
# `LATENCY_MS=100` adds a second pass per size against a sandbox answering each call 100 ms late,
# closer to a round trip to Meta (default `100`; `0` skips it); `IDLE=60` sets the idle period in
# seconds; `BIN=PATH` measures that binary instead of building one, for a before/after comparison).
# Never run by .ci/run.
#
# Per fleet size N, against one `permatoken sandbox --extra-tokens N`:
# 1. a generated fleet: N services, each a folder with its own `.env` (0600) holding
#    WHATSAPP_ACCESS_TOKEN and the app's FACEBOOK_APP_ID / FACEBOOK_APP_SECRET, the way each service of
#    a real fleet keeps its credentials (and the README's first example), and a permatoken.toml with
#    one `[[token]]` per service (`env_file`, default interval 1h: after the first round nothing is
#    due, so what follows is the daemon idle);
# 2. `permatoken watch --config … --state … --listen 127.0.0.1:0`, sampled from /proc every 100 ms:
#    the first round (from exec until /healthz gives a `last_round_at`; every token then has a check,
#    verified on /metrics), its peak resident memory (VmHWM) and CPU (utime+stime); then IDLE
#    seconds idle: CPU as % of one core, resident memory (VmRSS) at the end;
# 3. side by side, the naive way a cron job would do it: `permatoken check --env-file svc/.env` for
#    each service one after another (for N > 1000 a sample of 1000 services, extrapolated linearly;
#    with latency a sample of 100), total wall time and CPU (the shell loop's children).
# With latency, only the first round and the naive loop are measured (idle does not depend on it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${BIN:-}" ]; then bin=$BIN; else cargo build --release --quiet; bin=$PWD/target/release/permatoken; fi
sizes=${N:-1000 10000}
idle=${IDLE:-60}
latency=${LATENCY_MS:-100}
runs=
for n in $sizes; do runs="$runs $n:0"; done
if [ "$latency" != 0 ]; then for n in $sizes; do runs="$runs $n:$latency"; done; fi

work=$(mktemp -d)
sandbox_pid=
trap '[ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null; rm -rf "$work"' EXIT

echo "## Machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$(uname -sr); $(rustc --version); ${BIN:+binary $BIN, }commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' + uncommitted changes'); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo

for run in $runs; do
  n=${run%:*} lat=${run#*:}
  naive_sample=$(( lat > 0 ? 100 : 1000 ))
  run_idle=$(( lat > 0 ? 0 : idle ))
  dir=$work/n$n-$lat
  mkdir -p "$dir"
  "$bin" sandbox --latency-ms "$lat" --extra-tokens "$n" --extra-tokens-json "$dir/tokens.json" >"$dir/sandbox.txt" &
  sandbox_pid=$!
  for _ in $(seq 600); do grep -q '^Scenario tokens' "$dir/sandbox.txt" 2>/dev/null && break; sleep 0.1; done
  url=$(grep -o 'PERMATOKEN_GRAPH_URL=[^ ]*' "$dir/sandbox.txt" | cut -d= -f2)
  app_id=$(grep -o 'FACEBOOK_APP_ID=[0-9]*' "$dir/sandbox.txt" | cut -d= -f2)
  app_secret=$(grep -o 'FACEBOOK_APP_SECRET=[0-9a-f]*' "$dir/sandbox.txt" | cut -d= -f2)

  # The fleet and its configuration. The secrets go only into the 0600 .env files.
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

  echo "## $n tokens, $lat ms latency per Graph call"
  # The daemon, measured from /proc by a sampler that starts it.
  PERMATOKEN_GRAPH_URL=$url python3 - "$bin" "$dir" "$n" "$run_idle" <<'EOF'
import os, re, subprocess, sys, time, urllib.request
bin, dir, n, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tick = os.sysconf("SC_CLK_TCK")
log = open(os.path.join(dir, "watch.log"), "w+")
start = time.monotonic()
p = subprocess.Popen([bin, "watch", "--config", os.path.join(dir, "permatoken.toml"),
                      "--state", os.path.join(dir, "state.db"), "--listen", "127.0.0.1:0"],
                     stdout=log, stderr=log)
def status():
    fields = {}
    for line in open(f"/proc/{p.pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            fields[k] = int(v.split()[0])
    return fields
def cpu():
    stat = open(f"/proc/{p.pid}/stat").read()
    rest = stat[stat.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / tick   # utime, stime
base = None
while base is None:
    time.sleep(0.05)
    log.seek(0)
    m = re.search(r"on (http://127\.0\.0\.1:\d+)/", log.read())
    base = m and m.group(1)
    if p.poll() is not None: sys.exit("watch stopped:\n" + open(log.name).read())
peak_rss = 0
while True:
    peak_rss = max(peak_rss, status()["VmRSS"])
    try:
        if re.search(rb'"last_round_at":\d', urllib.request.urlopen(base + "/healthz", timeout=5).read()):
            break
    except OSError:
        pass
    time.sleep(0.1)
round_wall = time.monotonic() - start
round_cpu = cpu()
hwm = status()["VmHWM"]
metrics = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
checks = {}
for line in metrics.splitlines():
    m = re.match(r'permatoken_checks_total\{.*result="(\w+)".*\} (\d+)', line)
    if m: checks[m.group(1)] = checks.get(m.group(1), 0) + int(m.group(2))
if sum(checks.values()) != n or checks.get("ok", 0) != n:
    sys.exit(f"expected {n} ok checks after the first round, /metrics says {checks}")
print(f"watch first round: {round_wall:.2f} s wall, {round_cpu:.2f} s CPU (from exec, start-up included), "
      f"peak RSS {hwm/1024:.1f} MB (VmHWM {hwm} KiB), checks {checks}", flush=True)
with open(os.path.join(dir, "watch.txt"), "w") as out:
    out.write(f"{round_wall} {round_cpu}\n")
if idle == 0:
    p.terminate(); p.wait(timeout=30); sys.exit(0)
# Idle: nothing due for an hour; the loop still wakes each minute for due deliveries.
time.sleep(2)
c0, t0 = cpu(), time.monotonic()
rss = []
while time.monotonic() - t0 < idle:
    time.sleep(1)
    rss.append(status()["VmRSS"])
idle_cpu = (cpu() - c0) / (time.monotonic() - t0) * 100
p.terminate(); p.wait(timeout=30)
print(f"watch idle {idle} s: {idle_cpu:.3f} % of one core, RSS {rss[-1]/1024:.1f} MB (min {min(rss)/1024:.1f}, max {max(rss)/1024:.1f})")
print(f"watch state file: {os.path.getsize(os.path.join(dir, 'state.db'))/1024/1024:.1f} MB (+ WAL)")
EOF

  # The naive loop: one `permatoken check` per service, one after another.
  sample=$(( n < naive_sample ? n : naive_sample ))
  find "$dir/fleet" -mindepth 1 -maxdepth 1 | sort >"$dir/all.txt"
  sed -n "1,${sample}p" "$dir/all.txt" >"$dir/sample.txt"
  /usr/bin/time -f '%e %U %S' -o "$dir/naive.time" env PERMATOKEN_GRAPH_URL="$url" bash -c '
    while read -r svc; do "$0" check --env-file "$svc/.env" >/dev/null || exit 1; done <"$1"' "$bin" "$dir/sample.txt"
  read -r nwall nuser nsys <"$dir/naive.time"
  read -r wwall wcpu <"$dir/watch.txt"
  python3 - "$n" "$sample" "$nwall" "$nuser" "$nsys" "$wwall" "$wcpu" <<'EOF'
import sys
n, sample = int(sys.argv[1]), int(sys.argv[2])
nwall, nuser, nsys, wwall, wcpu = map(float, sys.argv[3:])
scale = n / sample
wall, cpu = nwall * scale, (nuser + nsys) * scale
note = "" if scale == 1 else f" (measured on {sample}, x{scale:.0f})"
print(f"naive loop, {n} x check: {wall:.2f} s wall, {cpu:.2f} s CPU{note}")
print(f"ratio watch / naive: wall {wwall/wall:.3f}, CPU {wcpu/cpu:.3f}")
EOF
  kill "$sandbox_pid"; wait "$sandbox_pid" 2>/dev/null || true; sandbox_pid=
  rm -rf "$dir"
  echo
done
