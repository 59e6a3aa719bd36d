#!/usr/bin/env bash
# Reproduces the `scan` figures of BENCHMARKS.md in one command:  bench/scan.sh
#
# On the Linux 6.1 source tree (Debian's linux-source-6.1, over 500 MB) with Meta credentials seeded
# into copies of a few of its files (made here, at run time):
#   1. `permatoken scan` against ripgrep running the same detector patterns (`-uu`), side by side;
#   2. against detect-secrets, trufflehog3 and secretlint on a slice of the tree, in MB/s;
#   3. `permatoken scan --git` on a history of 5,000+ commits built from the tree in slices.
# Installs what it needs (apt, pip, npm). Work folder: $BENCH_DIR (default /tmp/permatoken-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${BENCH_DIR:-/tmp/permatoken-bench}
mkdir -p "$work"
need_apt=()
command -v rg >/dev/null || need_apt+=(ripgrep)
command -v hyperfine >/dev/null || need_apt+=(hyperfine)
ls /usr/src/linux-source-6.1.tar.xz >/dev/null 2>&1 || need_apt+=(linux-source-6.1)
if [ ${#need_apt[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"; fi
command -v detect-secrets >/dev/null || pip install -q detect-secrets
command -v trufflehog3 >/dev/null || pip install -q trufflehog3
if [ ! -x /opt/secretlint/node_modules/.bin/secretlint ]; then
  mkdir -p /opt/secretlint && (cd /opt/secretlint && npm init -y >/dev/null && npm install --silent secretlint @secretlint/secretlint-rule-preset-recommend)
fi
cargo build --release --quiet
bin=$PWD/target/release/permatoken

tree=$work/linux
if [ ! -d "$tree" ]; then
  mkdir -p "$tree"
  tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$tree" --strip-components=1
fi

# Seeds: 12 credentials in copies of real files, generated now (never committed anywhere).
seeds=$tree/zz-permatoken-seeds
rm -rf "$seeds" && mkdir -p "$seeds"
python3 - "$tree" "$seeds" <<'PY'
import base64, os, random, secrets, sys
tree, seeds = sys.argv[1], sys.argv[2]
def token(app_id):
    raw = app_id.to_bytes(8, "big") + secrets.token_bytes(124)
    b64 = base64.b64encode(raw).decode()
    esc = "".join({"Z": "ZA", "+": "ZB", "/": "ZC", "=": "ZD"}.get(c, c) for c in b64)
    return "E" + esc
def hexs(): return secrets.token_hex(16)
app = random.randrange(10**14, 10**15)
copies = [
    ("kernel/fork.c", "c"), ("scripts/checkpatch.pl", "pl"), ("tools/perf/scripts/python/sched-migration.py", "py"),
    ("Documentation/process/coding-style.rst", "rst"), ("scripts/kconfig/menu.c", "c"), ("tools/testing/selftests/run_kselftest.sh", "sh"),
]
lines = [
    lambda: f"/* WHATSAPP_ACCESS_TOKEN={token(app)} */",
    lambda: f"FACEBOOK_APP_SECRET = '{hexs()}'  # FACEBOOK_APP_ID = {app}",
    lambda: f"my $fb_app_token = '{app}|{hexs()}';",
    lambda: f"url = 'https://graph.facebook.com/oauth/access_token?client_id={app}&client_secret={hexs()}'",
    lambda: f"token: {token(random.randrange(10**14, 10**15))}",
    lambda: f'{{"facebook": {{"app_id": "{app}", "app_secret": "{hexs()}"}}}}',
]
n = 0
for i, (path, ext) in enumerate(copies):
    text = open(os.path.join(tree, path), encoding="utf-8", errors="replace").read().splitlines()
    for j in range(2):
        at = len(text) * (j + 1) // 3
        text.insert(at, lines[(2 * i + j) % len(lines)]())
        n += 1
    open(os.path.join(seeds, f"copy{i}.{ext}"), "w").write("\n".join(text) + "\n")
print(f"seeded {n} credentials", file=sys.stderr)
PY

mb=$(du -sm --apparent-size "$tree" | cut -f1)
files=$(find "$tree" -type f | wc -l)
echo "## Machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(uname -sr); $(rg --version | head -1); $(hyperfine --version)"
echo "Tree: Linux 6.1 source, $mb MB, $files files (12 seeded credentials in $seeds)"
echo

patterns=(-e 'EAA[A-Za-z0-9]{100,}' -e '[0-9]{10,16}(\||%7[Cc])[0-9a-f]{32}' -e '(?i)secret[A-Za-z0-9_.-]*["'"'"' \t]*[=:>,`][ \t"'"'"'=:>,`]*[0-9a-f]{32}')
echo "## permatoken scan vs ripgrep with the same patterns, whole tree (warm cache, 5 runs each)"
hyperfine --style none --warmup 1 --runs 5 --export-markdown "$work/rg.md" \
  -n "permatoken scan" "$bin scan --format json $tree > $work/permatoken.json || test \$? -eq 1" \
  -n "rg -uu (same patterns)" "rg -uu --no-messages -c ${patterns[*]@Q} $tree > $work/rg.txt || true" >/dev/null
cat "$work/rg.md"
echo
echo "What each found:"
python3 - "$work/permatoken.json" "$seeds" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); seeds = sys.argv[2]
f = d["findings"]; inside = [x for x in f if x["path"].startswith(seeds)]
print(f"- permatoken: {len(f)} findings, {len(inside)} of them in the seeded copies, {len(f) - len(inside)} elsewhere; "
      f"{d['stats']['files']} files read, {d['stats']['skipped_binary']} binary skipped")
PY
echo "- ripgrep: $(awk -F: '{s+=$NF} END {print s}' "$work/rg.txt") matching lines in $(wc -l < "$work/rg.txt") files: $(grep -c "$seeds" "$work/rg.txt") seeded copies, $(grep -vc "$seeds" "$work/rg.txt") other files"
echo

slice=$tree/fs
cp -r "$seeds" "$slice/zz-seeds"
smb=$(du -sm --apparent-size "$slice" | cut -f1)
echo "## The Python and Node scanners, on a slice: fs/ + the seeded copies ($smb MB), each run in the slice's folder"
echo "| scanner | time | MB/s | findings |"
echo "|---|---:|---:|---:|"
run() { # name, command..., output file
  local name=$1 out=$2; shift 2
  local t0=$(date +%s.%N); (cd "$slice" && "$@" > "$out" 2>/dev/null) || true; local t1=$(date +%s.%N)
  local secs=$(python3 -c "print(f'{$t1-$t0:.2f}')")
  echo "$name|$secs|$(python3 -c "print(f'{$smb/($t1-$t0):.1f}')")"
}
r=$(run "permatoken scan" "$work/p.json" "$bin" scan --format json .); n=$(python3 -c "import json;print(len(json.load(open('$work/p.json'))['findings']))"); echo "| ${r//|/ | } | $n |"
r=$(run "detect-secrets scan --all-files" "$work/ds.json" detect-secrets scan --all-files .); n=$(python3 -c "import json;print(sum(len(v) for v in json.load(open('$work/ds.json'))['results'].values()))"); echo "| ${r//|/ | } | $n |"
r=$(run "trufflehog3 --no-history" "$work/th.json" trufflehog3 --no-history --format json .); n=$(python3 -c "import json;print(len(json.load(open('$work/th.json'))))" 2>/dev/null || echo "?"); echo "| ${r//|/ | } | $n |"
cat > "$work/.secretlintrc.json" <<'JSON'
{"rules": [{"id": "@secretlint/secretlint-rule-preset-recommend"}]}
JSON
r=$(run "secretlint (preset-recommend)" "$work/sl.json" /opt/secretlint/node_modules/.bin/secretlint --secretlintrc "$work/.secretlintrc.json" --format json "**/*"); n=$(python3 -c "import json;print(sum(len(x.get('messages',[])) for x in json.load(open('$work/sl.json'))))" 2>/dev/null || echo "?"); echo "| ${r//|/ | } | $n |"
rm -rf "$slice/zz-seeds"
echo

repo=$work/history
if [ ! -d "$repo/.git" ]; then
  echo "(building a 5,000-commit history from the tree, once)" >&2
  rm -rf "$repo" && git init -q "$repo"
  python3 - "$tree" "$seeds" <<'PY' | git -C "$repo" fast-import --quiet
import os, sys
tree, seeds = sys.argv[1], sys.argv[2]
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(tree) for f in fs if not d.startswith(seeds))
seeded = sorted(os.path.join(seeds, f) for f in os.listdir(seeds))
commits = 5000
per = max(1, len(files) // commits)
out = sys.stdout.buffer
def blob(path, name):
    data = open(path, "rb").read()
    out.write(b"M 100644 inline " + name.encode() + b"\n" + f"data {len(data)}\n".encode() + data + b"\n")
for i in range(commits + 1):
    msg = f"slice {i}".encode()
    out.write(b"commit refs/heads/main\n" + f"mark :{i + 1}\n".encode())
    out.write(f"committer bench <bench@example.invalid> {1700000000 + i} +0000\n".encode())
    out.write(f"data {len(msg)}\n".encode() + msg + b"\n")
    if i > 0:
        out.write(f"from :{i}\n".encode())
    for p in files[i * per:(i + 1) * per] if i < commits else files[commits * per:]:
        blob(p, os.path.relpath(p, tree))
    if i == commits // 2:
        for p in seeded: blob(p, "seeds/" + os.path.basename(p))
    if i == commits // 2 + 100:
        out.write(b"D seeds/" + os.path.basename(seeded[0]).encode() + b"\n")
PY
  git -C "$repo" checkout -q main
fi
commits=$(git -C "$repo" rev-list --count HEAD)
echo "## permatoken scan --git: $commits commits, every blob of the history (3 runs)"
hyperfine --style none --runs 3 --export-markdown "$work/git.md" -n "permatoken scan --git" "$bin scan --git --format json $repo > $work/git.json || test \$? -eq 1" >/dev/null
cat "$work/git.md"
python3 - "$work/git.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); f = d["findings"]; s = d["stats"]
print(f"- {s['blobs']} distinct blobs ({s['bytes']/1e6:.0f} MB of text), {s['commits']} commits; {len(f)} findings, "
      f"{sum(1 for x in f if x['at_head'])} still at HEAD, {sum(1 for x in f if not x['at_head'])} only in history; "
      f"paths: {sorted(set(x['path'] for x in f))}")
PY
