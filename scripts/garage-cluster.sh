#!/usr/bin/env bash
# A 3-node Garage 2.5 cluster (replication factor 3, consistent mode, one zone per node) in
# containers on a private Docker network, for `make bench` (scripts/bench.sh). The tests start
# theirs from Rust (tests/common/garage.rs, with fixed addresses for node outages); this is the
# same cluster for a shell: the same image (scripts/garage-image.sh), node configuration and
# set-up through Garage's own CLI.
#
#   scripts/garage-cluster.sh up DIR            start; writes DIR/env (sourceable):
#                                               GARAGE_ENDPOINT_1..3 (http://127.0.0.1:PORT),
#                                               GARAGE_KEY_ID, GARAGE_SECRET, GARAGE_REGION
#   scripts/garage-cluster.sh bucket DIR NAME   a bucket the key may read, write and own
#   scripts/garage-cluster.sh down DIR          remove the containers, their volumes, the network
#
# Everything is labelled berth-bench=1 (`docker rm -fv $(docker ps -aq -f label=berth-bench=1)`
# clears what a killed run left).
set -euo pipefail

IMAGE=berth-test/garage:2.5.0
NODES=3
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "garage-cluster.sh: $*" >&2; exit 1; }

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 up|bucket|down DIR [BUCKET]"

# `garage ARGS…` on node N, retried for up to a minute (a daemon that just started, a layout
# being applied).
garage_on() { # node args...
  local node=$1 out
  shift
  for _ in $(seq 1 300); do
    if out=$(docker exec "$(cat "$dir/name")-$node" garage "$@" 2>&1); then
      printf '%s\n' "$out"
      return 0
    fi
    sleep 0.2
  done
  die "garage $* on node $node: $out"
}

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

healthy() { # every node sees 3 storage nodes up and every partition complete
  local node
  for node in $(seq 1 "$NODES"); do
    docker exec "$(cat "$dir/name")-$node" garage json-api GetClusterHealth 2>/dev/null |
      python3 -c 'import json, sys
h = json.load(sys.stdin)
ok = h["status"] == "healthy" and h["storageNodesUp"] == 3 and h["partitionsAllOk"] == h["partitions"]
sys.exit(0 if ok else 1)' || return 1
  done
}

case $cmd in
up)
  bash "$ROOT/scripts/garage-image.sh" >/dev/null
  mkdir -p "$dir"
  name=berth-bench-garage-$$
  echo "$name" >"$dir/name"
  docker network create --label berth-bench=1 "$name" >/dev/null
  secret=$(openssl rand -hex 32)
  : >"$dir/env"
  for n in $(seq 1 "$NODES"); do
    config="$dir/garage$n.toml"
    (
      umask 077
      cat >"$config" <<EOF
metadata_dir = "/var/lib/garage/meta"
data_dir = "/var/lib/garage/data"
db_engine = "lmdb"
replication_factor = 3
consistency_mode = "consistent"
rpc_timeout_msec = 5000
rpc_bind_addr = "0.0.0.0:3901"
rpc_public_addr = "garage$n:3901"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "0.0.0.0:3900"
EOF
    )
    port=$(free_port)
    docker run -d --name "$name-$n" --network "$name" --hostname "garage$n" --network-alias "garage$n" \
      -p "127.0.0.1:$port:3900" -v "$config:/etc/garage/garage.toml:ro" --label berth-bench=1 \
      "$IMAGE" >/dev/null
    echo "GARAGE_ENDPOINT_$n=http://127.0.0.1:$port" >>"$dir/env"
  done
  for n in $(seq 2 "$NODES"); do
    id=$(garage_on "$n" node id -q | tail -n 1)
    garage_on 1 node connect "$id" >/dev/null
  done
  for n in $(seq 1 "$NODES"); do
    id=$(garage_on "$n" node id -q | tail -n 1 | cut -d@ -f1)
    garage_on 1 layout assign -z "zone$n" -c 10G "$id" >/dev/null
  done
  garage_on 1 layout apply --version 1 >/dev/null
  for _ in $(seq 1 300); do
    healthy && break
    sleep 0.3
  done
  healthy || die "the cluster did not become healthy: $(docker logs --tail 20 "$name-1" 2>&1)"
  key=$(garage_on 1 key create berth-bench)
  id=$(awk -F': *' '/Key ID:/ { print $2 }' <<<"$key" | tr -d ' ')
  secret_key=$(awk -F': *' '/Secret key:/ { print $2 }' <<<"$key" | tr -d ' ')
  [[ $id == GK* ]] && [ -n "$secret_key" ] || die "garage key create printed no key: $key"
  printf 'GARAGE_KEY_ID=%s\nGARAGE_SECRET=%s\nGARAGE_REGION=garage\n' "$id" "$secret_key" >>"$dir/env"
  ;;
bucket)
  bucket=${3:?bucket name}
  # shellcheck disable=SC1091
  . "$dir/env"
  garage_on 1 bucket create "$bucket" >/dev/null
  garage_on 1 bucket allow --read --write --owner "$bucket" --key "$GARAGE_KEY_ID" >/dev/null
  ;;
down)
  [ -f "$dir/name" ] || exit 0
  name=$(cat "$dir/name")
  for n in $(seq 1 "$NODES"); do docker rm -fv "$name-$n" >/dev/null 2>&1 || true; done
  docker network rm "$name" >/dev/null 2>&1 || true
  ;;
*) die "unknown command $cmd" ;;
esac
