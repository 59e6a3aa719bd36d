#!/usr/bin/env bash
# Reproduces the "`watch` at fleet scale: batched checks" figures of BENCHMARKS.md in one command:
#   bench/fleet.sh
# (`N=1000` or `N=10000` for one fleet size, both by default; `LATENCY_MS=100` the delay the sandbox
# adds to every HTTP answer, a batch counting as one answer (default 100, closer to a round trip to
# Meta); `BIN=PATH` measures that binary instead of building one; `MALLOC_ARENA_MAX=1` in the
# environment reaches `watch` too, to see what glibc's per-thread arenas add to its memory;
# `FLEET=set` names the services with one `[[token_set]]` instead of a `[[token]]` each, the only way
# past 10,000 or so, where the `[[token]]`s outgrow the 1 MiB configuration cap: the default from
# N = 50,000; `MODES="true"` measures the batched mode alone, since one by one a round of 100,000
# tokens at 100 ms per answer takes some 20 minutes).
# Never run by .ci/run.
#
# Per fleet size N, one `permatoken sandbox --extra-tokens N --latency-ms $LATENCY_MS` and one generated
# fleet (as bench/watch.sh makes it: N services, each a folder with its own 0600 `.env` holding
# WHATSAPP_ACCESS_TOKEN and the app's FACEBOOK_APP_ID / FACEBOOK_APP_SECRET, and a permatoken.toml
# with one `[[token]]` per service), then side by side, each on a fresh SQLite state (a single
# instance: no election, it leads by itself), with `[defaults] interval = "1m"`, `jitter = "0s"`:
#   batched:   `batch_checks = true`  (the default: /debug_token in Graph batches of 50 per app,
#              /me only on a token's first check or a change of state, batched too);
#   one by one: `batch_checks = false` (one /me and one /debug_token call per token, 16 tokens at once).
# For each, one `permatoken watch` process and two rounds within it (a restart would forget the
# identities, which live in memory only):
# - round 1 (every token new), from exec until /healthz says a round finished;
# - round 2 (steady), due 60 s after round 1 began (the shortest gap between two checks of a token):
#   it begins when the process starts reading the fleet's env files again (a jump of `syscr` in
#   /proc/<pid>/io, sampled every 10 ms while nothing else talks to the process), or at once when
#   round 1 took longer than the interval; it ends when /healthz names a new round;
# - for each round: wall time, CPU (utime+stime from /proc/<pid>/stat, all threads), peak resident
#   memory (VmHWM from /proc/<pid>/status; /metrics is scraped only after round 2, since rendering
#   N tokens' series would raise the peak; the peak after that scrape is printed too), and the sandbox's request log (its admin API; cleared
#   before each process): HTTP requests (a batch POST counts once), and sub-requests of batches
#   (/debug_token, /me) separately. /metrics must show 2N `ok` checks at the end.
# The log is split where round 1's N /debug_token and N /me had all been asked (the calls of round 2
# begin only after every check of round 1 has finished); when round 2 had not begun as round 1
# ended, the log's length then must be that split (a retried call would show). Round 2 must ask
# /debug_token once per token, and /me never (batched) or once per token (one by one). Any other
# count, a process that stops or a round that does not end within 30 minutes stops the script.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${BIN:-}" ]; then bin=$BIN; else cargo build --release --quiet; bin=$PWD/target/release/permatoken; fi
sizes=${N:-1000 10000}
latency=${LATENCY_MS:-100}

work=$(mktemp -d)
sandbox_pid=
trap '[ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null; rm -rf "$work"' EXIT

echo "## Machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$(uname -sr); $(rustc --version); ${BIN:+binary $BIN, }commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' + uncommitted changes'); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "sandbox latency: $latency ms per HTTP answer; state: SQLite, one instance (its own leader); MALLOC_ARENA_MAX ${MALLOC_ARENA_MAX:-not set}"
echo

for n in $sizes; do
  dir=$work/n$n
  mkdir -p "$dir"
  "$bin" sandbox --latency-ms "$latency" --extra-tokens "$n" --extra-tokens-json "$dir/tokens.json" >"$dir/sandbox.txt" &
  sandbox_pid=$!
  for _ in $(seq 600); do grep -q '^Admin API' "$dir/sandbox.txt" 2>/dev/null && break; sleep 0.1; done
  url=$(grep -o 'PERMATOKEN_GRAPH_URL=[^ ]*' "$dir/sandbox.txt" | cut -d= -f2)
  app_id=$(grep -o 'FACEBOOK_APP_ID=[0-9]*' "$dir/sandbox.txt" | cut -d= -f2)
  app_secret=$(grep -o 'FACEBOOK_APP_SECRET=[0-9a-f]*' "$dir/sandbox.txt" | cut -d= -f2)
  admin=$(grep -o -m1 'x-sandbox-admin: [0-9a-f]*' "$dir/sandbox.txt" | cut -d' ' -f2)

  # The fleet (bench/watch.sh's generator), with one configuration per mode. The secrets go only
  # into the 0600 .env files.
  fleet=${FLEET:-}
  if [ -z "$fleet" ]; then if [ "$n" -ge 50000 ]; then fleet=set; else fleet=tokens; fi; fi
  python3 - "$dir" "$app_id" "$app_secret" "$fleet" <<'EOF'
import json, os, sys
dir, app_id, app_secret, fleet = sys.argv[1:]
tokens = json.load(open(os.path.join(dir, "tokens.json")))["tokens"]
os.umask(0o077)
entries = []
for i, token in enumerate(tokens):
    svc = os.path.join(dir, "fleet", f"svc-{i:05}")
    os.makedirs(svc)
    with open(os.path.join(svc, ".env"), "w") as env:
        env.write(f"WHATSAPP_ACCESS_TOKEN={token}\nFACEBOOK_APP_ID={app_id}\nFACEBOOK_APP_SECRET={app_secret}\n")
    entries.append(f"\n[[token]]\nname = \"svc-{i:05}\"\nenv_file = \"fleet/svc-{i:05}/.env\"\n")
if fleet == "set":
    entries = ['\n[[token_set]]\nname = "svc"\nenv_files = "fleet/*/.env"\n']
for mode in ("true", "false"):
    with open(os.path.join(dir, f"batch-{mode}.toml"), "w") as config:
        config.write(f"[defaults]\ninterval = \"1m\"\njitter = \"0s\"\nbatch_checks = {mode}\n")
        config.writelines(entries)
EOF

  echo "## $n tokens, $latency ms per HTTP answer"
  echo "fleet: $([ "$fleet" = set ] && echo "one [[token_set]]" || echo "a [[token]] per service")"
  for mode in ${MODES:-true false}; do
    PERMATOKEN_GRAPH_URL=$url SANDBOX_ADMIN=$admin python3 - "$bin" "$dir" "$n" "$mode" >>"$dir/results.txt" <<'EOF'
import json, os, re, subprocess, sys, time, urllib.request
bin, dir, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
interval = 60
sandbox, admin = os.environ["PERMATOKEN_GRAPH_URL"], os.environ["SANDBOX_ADMIN"]
def sandbox_log(method="GET"):
    req = urllib.request.Request(sandbox + "/_sandbox/requests", method=method,
                                 headers={"x-sandbox-admin": admin})
    body = urllib.request.urlopen(req, timeout=120).read()
    return json.loads(body) if method == "GET" else None
sandbox_log("DELETE")
load = open("/proc/loadavg").read().split()[0]
tick = os.sysconf("SC_CLK_TCK")
log = open(os.path.join(dir, f"watch-{mode}.log"), "w+")
start = time.monotonic()
p = subprocess.Popen([bin, "watch", "--config", os.path.join(dir, f"batch-{mode}.toml"),
                      "--state", os.path.join(dir, f"state-{mode}.db"), "--listen", "127.0.0.1:0"],
                     stdout=log, stderr=log)
def fail(why):
    p.kill()
    log.seek(0)
    sys.exit(f"batch_checks = {mode}, {n} tokens: {why}\nwatch's log:\n{log.read()[-4000:]}")
def hwm():
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
def cpu():
    stat = open(f"/proc/{p.pid}/stat").read()
    rest = stat[stat.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / tick   # utime, stime
def syscr():
    for line in open(f"/proc/{p.pid}/io"):
        if line.startswith("syscr:"):
            return int(line.split()[1])
base = None
while base is None:
    time.sleep(0.05)
    log.seek(0)
    m = re.search(r"on (http://127\.0\.0\.1:\d+)/", log.read())
    base = m and m.group(1)
    if p.poll() is not None: fail("watch stopped")
def round_at():
    """The start (Unix seconds) of the last finished round, from /healthz; None before one."""
    try:
        m = re.search(rb'"last_round_at":(\d+)', urllib.request.urlopen(base + "/healthz", timeout=5).read())
        return m and int(m.group(1))
    except OSError:
        return None
def wait_round(after, deadline):
    while True:
        at = round_at()
        if at is not None and at != after:
            return at, time.monotonic()
        if p.poll() is not None: fail("watch stopped")
        if time.monotonic() > deadline: fail(f"no round finished within {deadline - start:.0f} s of start")
        time.sleep(0.02)
# Round 1: from exec.
r1_at, e1 = wait_round(None, start + 1800)
cpu1, hwm1, io1 = cpu(), hwm(), syscr()
# Round 2 is due at the first round's start + 60 s. Until it begins nothing talks to the process, so
# a jump of its read syscalls marks the start: 100 of them, a few env files or the state's reads at the
# round's start (a build that reads each file once crosses N reads later in the round than one that
# reads it twice, which would shorten the round measured).
due_by = r1_at + 1 + interval          # r1_at is whole seconds, rounded down
abut = time.time() >= due_by
s2 = e1 if abut else None
logged1 = None if abut else len(sandbox_log())   # the requests of round 1, if round 2 has not begun
while s2 is None:
    if syscr() - io1 >= min(n, 100):
        s2 = time.monotonic()
    elif time.time() > due_by + 2:
        abut, s2 = True, e1                # it began before io1 was read
    else:
        time.sleep(0.01)
if not abut:
    time.sleep(0.05)
r2_at, e2 = wait_round(r1_at, s2 + 1800)
cpu2, hwm2 = cpu(), hwm()
metrics = urllib.request.urlopen(base + "/metrics", timeout=60).read().decode()
hwm_scrape = hwm()
# Not SIGTERM: that lets an in-flight step finish, and a third round may have begun already.
p.kill(); p.wait(timeout=60)
checks = {}
for line in metrics.splitlines():
    m = re.match(r'permatoken_checks_total\{.*result="(\w+)".*\} (\d+)', line)
    if m: checks[m.group(1)] = checks.get(m.group(1), 0) + int(m.group(2))
if checks != {"ok": 2 * n}:
    fail(f"expected {2 * n} ok checks after two rounds, /metrics says {checks}")
# The sandbox's log, split by round: round 1 ends once its N /debug_token and N /me were all asked.
entries = sandbox_log()
def kind(e):
    last = e["path"].rstrip("/").rsplit("/", 1)[-1]
    return last if last in ("debug_token", "me") else e["path"]
seen = {"debug_token": 0, "me": 0}
split = None
for i, e in enumerate(entries):
    k = kind(e)
    if k in seen: seen[k] += 1
    if seen["debug_token"] >= n and seen["me"] >= n:
        split = i + 1
        break
if split is None: fail(f"round 1 did not ask every token: {seen}")
if logged1 is not None and logged1 != split:
    fail(f"round 1 made {logged1} requests, not {split}: more than one /debug_token and one /me per token")
def tally(part):
    t = {"http": 0, "post": 0, "sub_debug_token": 0, "sub_me": 0, "get_debug_token": 0, "get_me": 0, "other": 0}
    for e in part:
        k = kind(e)
        if e["batched"]:
            t["sub_" + k if k in ("debug_token", "me") else "other"] += 1
        else:
            t["http"] += 1
            if e["method"] == "POST": t["post"] += 1
            elif k in ("debug_token", "me"): t["get_" + k] += 1
            else: t["other"] += 1
    return t
expected = {"sub_debug_token": n, "sub_me": 0} if mode == "true" else {"get_debug_token": n, "get_me": n}
# Round 2 ends once it asked what it should: what follows is a third round begun before the kill
# (one by one, a round outlasts the 1-minute interval), counted in no round.
end, got = len(entries), {k: 0 for k in expected}
for j in range(split, len(entries)):
    e = entries[j]
    k = ("sub_" if e["batched"] else "get_") + kind(e)
    if k in got: got[k] += 1
    if all(got[k] >= v for k, v in expected.items()):
        end = j + 1
        break
rounds = [("round 1", e1 - start, cpu1, hwm1, tally(entries[:split])),
          ("round 2", e2 - s2, cpu2 - cpu1, hwm2, tally(entries[split:end]))]
if any(rounds[1][4][k] != v for k, v in expected.items()):
    fail(f"round 2 asked {rounds[1][4]}, expected {expected}")
for name, wall, c, h, t in rounds:
    if t["other"]: fail(f"{name}: unexpected requests {t}")
    print(json.dumps({"n": n, "batch": mode == "true", "round": name, "wall": wall, "cpu": c,
                      "hwm_kib": h, "hwm_scrape_kib": hwm_scrape, "load": load, "abut": abut and name == "round 2", **t}), flush=True)
EOF
  done
  python3 - "$dir/results.txt" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r["batch"], r["round"]): r for r in rows}
n = rows[0]["n"]
modes = [b for b in (True, False) if (b, "round 1") in by]
print("load average (1 min) at the start of each process: " + ", ".join(
    f"{'batched' if b else 'one by one'} {by[(b, 'round 1')]['load']}" for b in modes))
def per(requests):
    ratio = requests / n
    return f"{ratio:.3f}" + (f" (1/{n / requests:.0f})" if 0 < ratio < 1 else "")
print("| round | mode | wall | CPU | peak RSS (VmHWM) | HTTP requests | per token | sub-requests /debug_token + /me |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for rnd in ("round 1", "round 2"):
    for batch in modes:
        r = by[(batch, rnd)]
        subs = f"{r['sub_debug_token']} + {r['sub_me']}" if batch else f"(GET {r['get_debug_token']} + {r['get_me']})"
        note = " (began as round 1 ended)" if r["abut"] else ""
        print(f"| {rnd}{note} | {'batched' if batch else 'one by one'} | {r['wall']:.2f} s | {r['cpu']:.2f} s | "
              f"{r['hwm_kib']/1024:.1f} MB | {r['http']} ({r['post']} POST) | {per(r['http'])} | {subs} |")
    if len(modes) < 2:
        continue
    b, o = by[(True, rnd)], by[(False, rnd)]
    print(f"| {rnd} | **batched / one by one** | **{b['wall']/o['wall']:.3f}** | **{b['cpu']/max(o['cpu'], 0.01):.2f}** | "
          f"{b['hwm_kib']/o['hwm_kib']:.2f} | **{b['http']/o['http']:.4f}** | | |")
print("peak RSS after one `/metrics` scrape (after round 2): " + ", ".join(
    f"{'batched' if b else 'one by one'} {by[(b, 'round 2')]['hwm_scrape_kib']/1024:.1f} MB" for b in modes))
EOF
  kill "$sandbox_pid"; wait "$sandbox_pid" 2>/dev/null || true; sandbox_pid=
  rm -rf "$dir"
  echo
done
