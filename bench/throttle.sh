#!/usr/bin/env bash
# Reproduces "Issue 15: calls during a throttle, before and after" of BENCHMARKS.md in one command:
#   bench/throttle.sh                         this branch's `permatoken watch`
#   BEFORE=path/to/permatoken bench/throttle.sh   the same, then the `watch` of another build
# (`BIN=PATH` measures that binary instead of building one; `N=300` tokens, `DURATION=300` seconds
# watched per build, `THROTTLE_SECS=30` and `THROTTLE_GROW_MS=100` the fault.) Never run by .ci/run.
#
# Per build: one `permatoken sandbox --extra-tokens N` of this branch (its throttle fault is
# Meta's: every call answers code 4 with `X-App-Usage` at 100 % and no regain time, and each call
# made while throttled adds THROTTLE_GROW_MS to it), throttled for THROTTLE_SECS from the moment
# the daemon starts; N services, each a `.env` with its token and the app's credentials, one
# `[[token]]` each, `interval = "5s"` (a build with a one-minute floor checks every minute);
# `permatoken watch` for DURATION seconds. Counted from the sandbox's own log and counters: the
# Graph calls (each batch sub-request and each call alone; not the `POST`s that carry them) made
# while throttled, when the throttle ended (if it did), the calls after, and how long after the
# end every token had been asked again. Call counts do not depend on the build type: a debug
# build is enough.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${BIN:-}" ]; then bin=$BIN; else cargo build --quiet --bin permatoken; bin=$PWD/target/debug/permatoken; fi
n=${N:-300}
duration=${DURATION:-300}
throttle=${THROTTLE_SECS:-30}
grow=${THROTTLE_GROW_MS:-100}

work=$(mktemp -d)
sandbox_pid=
trap '[ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null; rm -rf "$work"' EXIT

echo "## Machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$(uname -sr); $(rustc --version); sandbox and after: ${BIN:-debug build of} commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' + uncommitted changes'); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "$n tokens, interval 5s, throttle ${throttle}s growing ${grow} ms per call, watched ${duration}s"
echo

builds="after:$bin"
if [ -n "${BEFORE:-}" ]; then builds="before:$BEFORE $builds"; fi
for build in $builds; do
  label=${build%%:*} watch_bin=${build#*:}
  dir=$work/$label
  mkdir -p "$dir"
  "$bin" sandbox --extra-tokens "$n" --extra-tokens-json "$dir/tokens.json" >"$dir/sandbox.txt" &
  sandbox_pid=$!
  for _ in $(seq 600); do grep -q '^Scenario tokens' "$dir/sandbox.txt" 2>/dev/null && break; sleep 0.1; done
  url=$(grep -o 'PERMATOKEN_GRAPH_URL=[^ ]*' "$dir/sandbox.txt" | cut -d= -f2)
  admin=$(grep -o "x-sandbox-admin: [0-9a-f]*" "$dir/sandbox.txt" | head -1 | cut -d' ' -f2)
  app_id=$(grep -o 'FACEBOOK_APP_ID=[0-9]*' "$dir/sandbox.txt" | cut -d= -f2)
  app_secret=$(grep -o 'FACEBOOK_APP_SECRET=[0-9a-f]*' "$dir/sandbox.txt" | cut -d= -f2)

  # The fleet and its configuration. The secrets go only into the 0600 .env files.
  python3 - "$dir" "$app_id" "$app_secret" <<'EOF'
import json, os, sys
dir, app_id, app_secret = sys.argv[1:]
tokens = json.load(open(os.path.join(dir, "tokens.json")))["tokens"]
os.umask(0o077)
with open(os.path.join(dir, "permatoken.toml"), "w") as config:
    config.write("[defaults]\ninterval = \"5s\"\n")
    for i, token in enumerate(tokens):
        svc = os.path.join(dir, "fleet", f"svc-{i:05}")
        os.makedirs(svc)
        with open(os.path.join(svc, ".env"), "w") as env:
            env.write(f"WHATSAPP_ACCESS_TOKEN={token}\nFACEBOOK_APP_ID={app_id}\nFACEBOOK_APP_SECRET={app_secret}\n")
        config.write(f"\n[[token]]\nname = \"svc-{i:05}\"\nenv_file = \"fleet/svc-{i:05}/.env\"\n")
EOF

  echo "## $label: $watch_bin"
  PERMATOKEN_GRAPH_URL=$url python3 - "$watch_bin" "$dir" "$url" "$admin" "$duration" "$throttle" "$grow" <<'EOF'
import json, os, subprocess, sys, time, urllib.request
bin, dir, url, admin, duration, throttle, grow = sys.argv[1:]
duration, throttle, grow = int(duration), int(throttle), int(grow)
tokens = set(json.load(open(os.path.join(dir, "tokens.json")))["tokens"])
def admin_call(path, body=None):
    request = urllib.request.Request(url + path, headers={"x-sandbox-admin": admin, "content-type": "application/json"},
                                     data=None if body is None else json.dumps(body).encode())
    return json.load(urllib.request.urlopen(request, timeout=30))
def graph_calls(requests):
    # Each sub-request and each call alone; not a batch's own `POST /`.
    return [r for r in requests if not (not r["batched"] and r["method"] == "POST" and r["path"].endswith("/"))]
def asked(requests):
    out = set()
    for r in requests:
        if r["path"].endswith("/debug_token") and r.get("query"):
            for pair in r["query"].split("&"):
                k, _, v = pair.partition("=")
                if k == "input_token":
                    out.add(urllib.parse.unquote(v))
    return out
import urllib.parse
admin_call("/_sandbox/faults", {"throttle_secs": throttle, "throttle_grow_ms": grow})
start = time.monotonic()
log = open(os.path.join(dir, "watch.log"), "w")
p = subprocess.Popen([bin, "watch", "--config", os.path.join(dir, "permatoken.toml"),
                      "--state", os.path.join(dir, "state.db"), "--listen", "127.0.0.1:0"],
                     stdout=log, stderr=log)
ended_at = ended_index = checked_after = None
while time.monotonic() - start < duration:
    time.sleep(0.5)
    t = admin_call("/_sandbox/throttle")
    if ended_at is None and not t["active"]:
        ended_at = time.monotonic() - start
        ended_index = len(admin_call("/_sandbox/requests"))
        refused = t["refused"]
    if ended_at is not None and checked_after is None:
        if tokens <= asked(admin_call("/_sandbox/requests")[ended_index:]):
            checked_after = time.monotonic() - start - ended_at
    if p.poll() is not None:
        sys.exit("watch stopped:\n" + open(log.name).read())
p.terminate()
p.wait(timeout=60)
t = admin_call("/_sandbox/throttle")
calls = len(graph_calls(admin_call("/_sandbox/requests")))
if ended_at is None:
    refused = t["refused"]
    print(f"- calls made while throttled: {refused} in {duration} s; the throttle never ended "
          f"({t['remaining_ms'] / 1000:.0f} s left of it when the daemon stopped); calls after: 0")
else:
    print(f"- calls made while throttled: {refused}; the throttle ended {ended_at:.0f} s after the start "
          f"(set at {throttle} s); calls after it: {calls - refused} in the remaining {duration - ended_at:.0f} s")
    print("- every token asked again " + (f"{checked_after:.0f} s after the throttle's end" if checked_after is not None
                                          else "never within the run"))
lines = open(log.name).read().splitlines()
limited = [l for l in lines if "rate-limit" in l or "rate limit" in l]
print(f"- log lines about the rate limit: {len(limited)} (of {len(lines)})")
EOF
  kill "$sandbox_pid" 2>/dev/null || true
  wait "$sandbox_pid" 2>/dev/null || true
  sandbox_pid=
  echo
done
