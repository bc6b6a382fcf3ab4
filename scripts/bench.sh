#!/usr/bin/env bash
# `make bench`: berth against CNCF distribution 2.8.2 (Debian's docker-registry) on this machine.
#
# Builds berth (release), installs docker-registry and nginx with apt-get when missing, measures the
# machine's ceilings (SHA-256 on one core, fsync'd sequential write, loopback HTTP PUT/GET through
# nginx), then runs every `berth bench` scenario against both registries on loopback, each on fresh
# temporary filesystem storage: BENCH_REPEAT rounds (default 3), the order alternating between
# rounds and groups. `berth bench --report` turns the JSON lines into medians and ratios; the result
# goes to BENCHMARKS.md and benches/results/ (results.jsonl, report.md, throughput.svg).
#
# Knobs (environment): BENCH_REPEAT=3, BENCH_BLOB_SIZE=1GiB, BENCH_HUGE_SIZE=4GiB (0 skips the
# 4 GiB push), BENCH_DURATION=10 (seconds of manifest-get), BENCH_TMPDIR=/var/tmp,
# BENCH_NO_BUILD=1 (use target/release/berth as is), BENCH_NO_MD=1 (leave BENCHMARKS.md alone).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO=${CARGO:-cargo}
REPEAT=${BENCH_REPEAT:-3}
BLOB_SIZE=${BENCH_BLOB_SIZE:-1GiB}
HUGE_SIZE=${BENCH_HUGE_SIZE:-4GiB}
DURATION=${BENCH_DURATION:-10}
OUT="$ROOT/benches/results"
BERTH="$ROOT/target/release/berth"
T0=$(date +%s)

log() { printf '[bench %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- build and tools ---------------------------------------------------------------------------
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  log "building berth (release)"
  (cd "$ROOT" && $CARGO build --release --quiet)
fi
[ -x "$BERTH" ] || die "$BERTH missing"
BUILD_SECONDS=$(($(date +%s) - T0))

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    # policy-rc.d (present in Debian containers) keeps nginx's package from starting a service.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
      log "apt-get install failed for some of: ${missing[*]}"
  else
    log "not root: cannot apt-get install ${missing[*]}"
  fi
fi
command -v docker-registry >/dev/null 2>&1 || die "docker-registry (CNCF distribution) is not installed"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || NGINX=""
DIST_VERSION=$(docker-registry --version 2>/dev/null | awk '{print $3}')
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  COMMIT="$COMMIT plus uncommitted changes"
fi

# --- workspace, processes, cleanup -------------------------------------------------------------
WORK=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/berth-bench.XXXXXX")
JSON="$WORK/results.jsonl"
: >"$JSON"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    if [ -n "$p" ] && kill "$p" 2>/dev/null; then
      wait "$p" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  die "no free port"
}

wait_http() { # url pid name
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  log "$3 did not start: $(tail -c 2000 "$WORK/$3.log" 2>/dev/null)"
  return 1
}

stop() { # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Both registries get the same treatment: loopback, fresh filesystem storage, deletes enabled, no
# per-request log lines. berth keeps its default storage.filesystem.fsync: true (distribution
# never fsyncs).
registry_config() { # dir port
  cat <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $1/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$2
  secret: berth-bench
EOF
}

SERVER_PID=""
SERVER_URL=""
start_registry() { # name
  local name=$1 dir="$WORK/$1" port
  rm -rf "$dir"
  mkdir -p "$dir/data"
  port=$(free_port)
  registry_config "$dir" "$port" >"$dir/config.yml"
  case $name in
    berth) "$BERTH" serve "$dir/config.yml" >"$WORK/$name.log" 2>&1 &
      ;;
    distribution) env -u AWS_CA_BUNDLE docker-registry serve "$dir/config.yml" >"$WORK/$name.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  SERVER_URL="http://127.0.0.1:$port"
  wait_http "$SERVER_URL/v2/" "$SERVER_PID" "$name" || die "$name did not start"
}

FAILED=0
bench() { # label url pid seed scenarios... (extra args after --)
  local label=$1 url=$2 pid=$3 seed=$4
  shift 4
  sync
  local args=(bench --url "$url" --label "$label" --seed "$seed" --json "$JSON"
    --blob-size "$BLOB_SIZE" --huge-blob-size "$HUGE_SIZE" --duration "$DURATION")
  if [ -n "$pid" ]; then args+=(--server-pid "$pid"); fi
  for s in "$@"; do args+=(--scenario "$s"); done
  if ! "$BERTH" "${args[@]}" >"$WORK/last-table.txt"; then
    FAILED=1
    log "FAILED: $label $* (seed $seed)"
  fi
  sed 's/^/    /' "$WORK/last-table.txt" >&2
}

json_line() { # scenario label bytes seconds
  awk -v s="$1" -v l="$2" -v b="$3" -v t="$4" 'BEGIN {
    printf "{\"scenario\":\"%s\",\"registry\":\"%s\",\"bytes\":%d,\"seconds\":%.6f,\"mb_s\":%.3f,\"ops\":1,\"ops_s\":%.6f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
      s, l, b, t, b / t / 1e6, 1 / t, t * 1000, t * 1000 }' >>"$JSON"
}

# Busy-ness of the machine while this runs: every 5 s, the 1-minute load average, whether a
# compiler runs, and the CPU ticks of every process outside this script's process group.
SAMPLES="$WORK/load.txt"
OTHERS="$WORK/others.txt"
MYPGRP=$(sed 's/.*) //' /proc/$$/stat | cut -d' ' -f3)
(
  while sleep 5; do
    echo "$(cut -d' ' -f1 /proc/loadavg) $(pgrep -c 'rustc|cargo|cc1|cc1plus|clippy-driver' || true)" >>"$SAMPLES"
    awk -v pg="$MYPGRP" '{ sub(/^.*\) /, ""); if ($3 != pg) print FILENAME, $12 + $13 }' /proc/[0-9]*/stat 2>/dev/null >>"$OTHERS" || true
  done
) &
PIDS+=($!)
MEASURE_T0=$(date +%s)

# --- machine ceilings --------------------------------------------------------------------------
log "ceilings: SHA-256 on one core"
for r in $(seq 1 "$REPEAT"); do
  bench sha2 "http://127.0.0.1:9" "" "$r" ceiling-sha256
done
if command -v openssl >/dev/null 2>&1; then
  kbps=$(openssl speed -evp sha256 -bytes 1048576 -seconds 3 2>/dev/null | awk '$1 == "sha256" { v = $NF; sub(/k$/, "", v); print v }')
  if [ -n "$kbps" ]; then awk -v k="$kbps" 'BEGIN { printf "{\"scenario\":\"ceiling-sha256-openssl\",\"registry\":\"openssl\",\"mb_s\":%.3f}\n", k / 1000 }' >>"$JSON"; fi
fi

log "ceilings: sequential write + fsync (dd, 1 GiB)"
dd_seconds() { dd if=/dev/zero of="$WORK/dd.bin" bs=1M count=1024 "$@" 2>&1 | sed -n 's/.*copied, \([0-9.e+-]*\) s.*/\1/p'; rm -f "$WORK/dd.bin"; }
for r in $(seq 1 "$REPEAT"); do
  sync
  s=$(dd_seconds conv=fsync)
  if [ -n "$s" ]; then json_line ceiling-fsync-write dd $((1 << 30)) "$s"; fi
done
s=$(dd_seconds oflag=direct conv=fsync || true)
if [ -n "$s" ]; then json_line ceiling-direct-write dd $((1 << 30)) "$s"; fi

NGINX_NOTE=""
if [ -n "$NGINX" ]; then
  log "ceilings: loopback HTTP through nginx (PUT and GET of the large blob)"
  NG="$WORK/nginx"
  mkdir -p "$NG/www/bench" "$NG/tmp" "$NG/logs"
  NPORT=$(free_port)
  {
    [ "$(id -u)" = 0 ] && echo "user root;"
    cat <<EOF
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $NG/tmp;
  proxy_temp_path $NG/tmp;
  fastcgi_temp_path $NG/tmp;
  uwsgi_temp_path $NG/tmp;
  scgi_temp_path $NG/tmp;
  client_max_body_size 0;
  client_body_buffer_size 1m;
  server {
    listen 127.0.0.1:$NPORT;
    root $NG/www;
    location /bench/ { dav_methods PUT; create_full_put_path on; }
  }
}
EOF
  } >"$NG/nginx.conf"
  "$NGINX" -p "$NG" -c "$NG/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  if wait_http "http://127.0.0.1:$NPORT/" "$NGINX_PID" nginx; then
    for r in $(seq 1 "$REPEAT"); do
      rm -f "$NG/www/bench/blob"
      bench nginx "http://127.0.0.1:$NPORT" "" "$r" http-put
      bench nginx "http://127.0.0.1:$NPORT" "" "$r" http-get
    done
  else
    NGINX_NOTE="nginx did not start: no loopback HTTP ceiling."
  fi
  stop "$NGINX_PID"
  rm -rf "$NG"
else
  NGINX_NOTE="nginx could not be installed: no loopback HTTP ceiling."
fi

# --- the registries ----------------------------------------------------------------------------
GROUPS_LARGE=(push-monolithic push-single-post push-chunked-1m push-chunked-8m push-chunked-64m pull-large pull-large-nohash)
GROUPS_MANY=(push-small push-medium)
GROUPS_MANIFEST=(manifest-get)

run_group() { # round group-index scenarios...
  local round=$1 g=$2
  shift 2
  local order=(berth distribution)
  (((round + g) % 2 == 0)) || order=(distribution berth)
  for name in "${order[@]}"; do
    start_registry "$name"
    log "round $round: $name: $*"
    bench "$name" "$SERVER_URL" "$SERVER_PID" "$round" "$@"
    stop "$SERVER_PID"
    rm -rf "${WORK:?}/$name"
  done
}

for round in $(seq 1 "$REPEAT"); do
  run_group "$round" 0 "${GROUPS_LARGE[@]}"
  run_group "$round" 1 "${GROUPS_MANY[@]}"
  run_group "$round" 2 "${GROUPS_MANIFEST[@]}"
done
if [ "$HUGE_SIZE" != 0 ]; then
  run_group 1 1 push-monolithic-4g
fi

# --- report ------------------------------------------------------------------------------------
mkdir -p "$OUT"
cp "$JSON" "$OUT/results.jsonl"
"$BERTH" bench --report "$JSON" --markdown "$OUT/report.md" --svg "$OUT/throughput.svg" >/dev/null
TOTAL=$(($(date +%s) - T0))
log "done in ${TOTAL}s (build ${BUILD_SECONDS}s)"

MEASURED=$(($(date +%s) - MEASURE_T0))
busy=$(awk '{ n++; if ($1 > max) max = $1; if ($2 > 0) c++ } END { printf "%d %.2f %d", n, max, c }' "$SAMPLES" 2>/dev/null || echo "0 0 0")
read -r nsamples maxload compiling <<<"$busy"
# CPU seconds of other processes: per PID, last sample minus first (USER_HZ = 100).
others=$(awk '{ if (!($1 in first)) first[$1] = $2; last[$1] = $2 } END { for (p in first) t += last[p] - first[p]; printf "%.0f", t / 100 }' "$OTHERS" 2>/dev/null || echo 0)
share=$(awk -v o="$others" -v m="$MEASURED" -v n="$(nproc)" 'BEGIN { printf "%.0f", (m > 0 ? 100 * o / (m * n) : 0) }')
if [ "${compiling:-0}" -gt 0 ] || [ "$share" -ge 5 ]; then
  BUSY="**The machine was busy:** processes outside the benchmark used $others CPU-seconds during the $MEASURED s of measurement ($share % of the machine's $(nproc) cores); compilers (rustc/cargo) were running in ${compiling:-0} of $nsamples samples taken every 5 s; the 1-minute load average reached $maxload. Both registries met the same interference (rounds alternate), but absolute numbers are lower and noisier than on an idle machine."
else
  BUSY="The machine was otherwise idle: processes outside the benchmark used $others CPU-seconds during the $MEASURED s of measurement ($share % of $(nproc) cores); the 1-minute load average peaked at $maxload (the load generator and the server make up most of it)."
fi
log "$BUSY"

if [ -z "${BENCH_NO_MD:-}" ]; then
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  shani=$(grep -q -w sha_ni /proc/cpuinfo && echo "with SHA extensions (sha_ni)" || echo "without SHA extensions")
  mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
  fs=$(df -T "${BENCH_TMPDIR:-/var/tmp}" | awk 'NR == 2 { print $2 " on " $1 }')
  {
    cat <<EOF
# Benchmarks

berth (commit $COMMIT) against CNCF distribution $DIST_VERSION (Debian's \`docker-registry\`), on
the same machine in the same run, produced by \`make bench\` (\`scripts/bench.sh\`, which drives
\`berth bench\`). Ratios are berth ÷ distribution of medians over $REPEAT rounds; higher is better
for throughput, and the chart scales each scenario's two bars to the larger one.

![throughput per scenario](benches/results/throughput.svg)

$(cat "$OUT/report.md")

## How this was measured

- Machine: $(nproc) cores ($cpu, $shani), $mem of memory, Linux $(uname -r), storage: $fs.
  The load generator runs on the same cores as the server it measures.
- $BUSY
- Each registry runs on 127.0.0.1 with fresh filesystem storage under \`${BENCH_TMPDIR:-/var/tmp}\`,
  restarted for every group of scenarios (large blobs, many blobs, manifests), \`log.level: warn\`
  and the access log off for both. berth keeps its default \`storage.filesystem.fsync: true\`
  (data and directory entries are synced before a push is acknowledged); distribution never
  fsyncs. \`sync\` runs before every group so neither pays for the other's dirty pages.
- Blobs: $BLOB_SIZE for the large scenarios (deterministic pseudo-random content, generated while
  streaming; digests computed before the clock starts), 2,000 × 4 KiB at concurrency 32,
  200 × 1 MiB at concurrency 16, a small OCI image whose manifest is fetched by tag at concurrency
  64 for ${DURATION} s. \`push-monolithic-4g\` ($HUGE_SIZE) runs once, for peak memory.
- Server CPU seconds (utime + stime from \`/proc/PID/stat\`) and peak RSS (\`VmHWM\` from
  \`/proc/PID/status\`, reset through \`/proc/PID/clear_refs\` at the start of each scenario) cover
  the timed part of each scenario only.
- A \`verify\` pass follows every group: each blob is HEADed and read back with its digest checked,
  each manifest fetched by tag and digest; any failure fails \`make bench\`.
- distribution does not implement single-request \`POST ?digest=\` uploads: it answers 202, and
  \`berth bench\` then PUTs the blob as a client must (noted in \`results.jsonl\`).
- Ceilings: \`ceiling-sha256\` hashes in memory with the \`sha2\` crate berth uses; openssl's figure
  is \`openssl speed -evp sha256 -bytes 1048576 -seconds 3\`; writes are
  \`dd if=/dev/zero bs=1M count=1024 conv=fsync\` (and with \`oflag=direct\`) on the storage's
  filesystem; HTTP is nginx ($("${NGINX:-true}" -v 2>&1 | sed 's/.*nginx\///'), DAV \`PUT\` into a file, \`GET\` with sendfile from page cache)
  driven by the same client. ${NGINX_NOTE}
- Total time of this run: ${TOTAL} s, of which ${BUILD_SECONDS} s building.

## Commands

\`\`\`sh
make bench                                   # everything above; BENCH_REPEAT, BENCH_BLOB_SIZE, … in scripts/bench.sh
berth bench --url http://127.0.0.1:5000      # every scenario against one registry
berth bench --url https://registry.example --user me --scenario push-chunked-8m --blob-size 256MiB --json out.jsonl
berth bench --report out.jsonl --markdown report.md --svg chart.svg   # compare labels berth / distribution
\`\`\`

Raw results: [benches/results/results.jsonl](benches/results/results.jsonl) (one JSON object per
scenario run: scenario, registry, seed, bytes, seconds, mb_s, ops, ops_s, p50_ms, p99_ms, errors,
server_cpu_s, server_peak_rss_mib, client_cpu_s).
EOF
  } >"$ROOT/BENCHMARKS.md"
  log "wrote BENCHMARKS.md and benches/results/"
fi

cat "$OUT/report.md"
[ "$FAILED" = 0 ] || die "some scenarios failed (see above)"
