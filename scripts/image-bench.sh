#!/usr/bin/env bash
# Image size and container start-to-first-200 of berth:latest against a stand-in for registry:2:
# the official image cannot be pulled here, so Debian's docker-registry (CNCF distribution
# 2.8.2) is packed the way berth is (scripts/image-rootfs.sh: the stripped binary, the libraries
# ldd names, CA certificates, in a scratch image) with registry:2's default configuration.
# Start-to-first-200: from `docker run -d` to the first `GET /v2/` answering 200 on the
# published port (curl every 10 ms), median of BENCH_IMAGE_RUNS (10) runs each, alternating.
# Writes the table into BENCHMARKS.md (between the image-bench markers) and
# benches/results/image.md. Needs berth:latest (`make image`; `make bench-image` does both).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${BENCH_IMAGE_RUNS:-10}
STANDIN=berth-bench/registry-standin:2.8.2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

die() { echo "image-bench.sh: $*" >&2; exit 1; }

for tool in docker docker-registry curl python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (make deps)"
done
docker image inspect berth:latest >/dev/null 2>&1 || { echo "image-bench.sh: no berth:latest: run make image" >&2; exit 1; }

# registry:2's /etc/docker/registry/config.yml (distribution's cmd/registry/config-dev.yml
# as the image ships it).
cat > "$work/registry2.yml" <<'YML'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
YML
ROOTFS_NAME=registry ROOTFS_CONFIG="$work/registry2.yml" \
  bash "$ROOT/scripts/image-rootfs.sh" "$(command -v docker-registry)" "$work/ctx/rootfs" >/dev/null
cat > "$work/ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
VOLUME ["/var/lib/registry"]
EXPOSE 5000
ENTRYPOINT ["registry"]
CMD ["serve", "/etc/docker/registry/config.yml"]
DOCKERFILE
# (The legacy builder's deprecation notice goes to stderr: shown only if the build fails.)
docker build -q -t "$STANDIN" "$work/ctx" >/dev/null 2>"$work/build.err" || { cat "$work/build.err" >&2; exit 1; }

size_mb() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f", $1 / 1e6 }'; }
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# Milliseconds from `docker run -d` to the first 200 of /v2/.
start_ms() {
  local image=$1 port name t0 t1
  port=$(free_port)
  name=berth-image-bench-$$-$RANDOM
  t0=$(date +%s%N)
  docker run -d --name "$name" -p "127.0.0.1:$port:5000" "$image" >/dev/null
  for _ in $(seq 3000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/")" = 200 ] && break
    sleep 0.01
  done
  t1=$(date +%s%N)
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/")" = 200 ] ||
    { docker logs "$name" >&2; docker rm -f "$name" >/dev/null; echo "image-bench.sh: $image never answered 200" >&2; exit 1; }
  docker rm -f -v "$name" >/dev/null
  echo $(( (t1 - t0) / 1000000 ))
}
median() { sort -n | awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); if (NR % 2) print v[m]; else print int((v[m] + v[m + 1]) / 2) }'; }
range() { sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo " – " hi }'; }

berth_runs=() standin_runs=()
for _ in $(seq "$RUNS"); do
  berth_runs+=("$(start_ms berth:latest)")
  standin_runs+=("$(start_ms "$STANDIN")")
done
b_med=$(printf '%s\n' "${berth_runs[@]}" | median)
s_med=$(printf '%s\n' "${standin_runs[@]}" | median)
b_rng=$(printf '%s\n' "${berth_runs[@]}" | range)
s_rng=$(printf '%s\n' "${standin_runs[@]}" | range)
b_size=$(size_mb berth:latest)
s_size=$(size_mb "$STANDIN")
docker rmi "$STANDIN" >/dev/null

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
mkdir -p "$ROOT/benches/results"
cat > "$ROOT/benches/results/image.md" <<MD
### Container image

Produced by \`make bench-image\` (\`scripts/image-bench.sh\`) at commit $commit.

| | berth:latest | registry:2 stand-in (distribution 2.8.2) |
|---|---:|---:|
| image size (MB, \`docker image inspect\`) | $b_size | $s_size |
| start to first \`GET /v2/\` 200, ms (median of $RUNS; min – max) | $b_med ($b_rng) | $s_med ($s_rng) |

The official registry:2 image cannot be pulled on this machine; the stand-in is Debian's
\`docker-registry\` 2.8.2 packed like berth (\`scripts/image-rootfs.sh\`: stripped binary, the
libraries \`ldd\` names, CA certificates, \`FROM scratch\`) with registry:2's default configuration.
registry:2 itself (Alpine-based, distribution 2.8) is about 25 MB. Start-to-first-200 runs from
\`docker run -d\` to the first 200 of \`/v2/\` on the published port (polled every 10 ms), so it
includes docker creating and starting the container; runs alternate between the two images.

Of berth's size, the stripped binary is about 21.4 MB and OpenSSL with glibc 8.1 MB. Measured by
hand (not by this script): \`lto = "fat"\` with \`codegen-units = 1\` makes the stripped binary 16.3 MB
(an image of about 25 MB). It is not adopted: side by side on this machine (3 alternating rounds,
512 MiB blobs, the same client, \`scripts/lto-bench.sh\`), LTO ÷ plain medians were
push-chunked-8m 1.06×, push-small 0.75×, pull-large 0.81×, pull-large-nohash 0.93×, manifest-get
1.05×, with per-run ranges overlapping widely (pull-large 580–659 vs 363–805 MB/s): no gain shown,
and pulls, which matter most, if anything slower.
MD

splice_section "$ROOT/BENCHMARKS.md" image-bench "$ROOT/benches/results/image.md"
cat "$ROOT/benches/results/image.md"
