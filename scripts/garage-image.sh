#!/usr/bin/env bash
# Builds berth-test/garage:2.5.0, the image of the Garage cluster the tests start
# (tests/common/garage.rs): `FROM scratch` with the `garage` binary of this machine, exactly the
# shared libraries `ldd` names (and the loader), and the metadata and data directories as
# volumes (LMDB maps its file: a volume is a plain directory, the container's own layer is
# fuse-overlayfs here). Each node gets its configuration mounted at /etc/garage/garage.toml.
#
#   scripts/garage-image.sh        the binary in ~/.cargo/bin (`make deps` installs it)
#   GARAGE=/path/to/garage scripts/garage-image.sh
#
# Idempotent: the image is labelled with the binary's sha256 and is not rebuilt while the label
# matches (a docker inspect, well under a second). The tests run this script themselves.
set -euo pipefail

TAG=berth-test/garage:2.5.0
VERSION=2.5.0
LABEL=berth.garage.sha256
INSTALL="cargo install garage --version $VERSION --locked --no-default-features --features bundled-libs,lmdb"

. "$(dirname "$0")/scratch-rootfs.sh"
for tool in docker ldd sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
binary=${GARAGE:-$HOME/.cargo/bin/garage}
[ -x "$binary" ] || die "no Garage binary at $binary: \`make deps\` builds it ($INSTALL: 20 to 50 minutes), or set GARAGE=/path/to/garage"
"$binary" --version 2>/dev/null | grep -qE "[v:]$VERSION( |$)" ||
  die "$binary is not Garage $VERSION ($("$binary" --version 2>&1 | head -n 1)): $INSTALL"

sha=$(sha256sum "$binary" | cut -d ' ' -f 1)
current=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$TAG" 2>/dev/null || true)
if [ "$current" = "$sha" ]; then
  echo "$TAG (up to date)"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
common_files "$root"
add_binary "$root" "$binary" /usr/local/bin/garage
mkdir -p "$root"/etc/garage "$root"/var/lib/garage/meta "$root"/var/lib/garage/data
cat > "$root"/etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/usr/sbin/nologin
PASSWD
cat > "$root"/etc/group <<'GROUP'
root:x:0:
GROUP
cat > "$work"/Dockerfile <<DOCKERFILE
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin GARAGE_CONFIG_FILE=/etc/garage/garage.toml
LABEL $LABEL=$sha
VOLUME ["/var/lib/garage/meta", "/var/lib/garage/data"]
# S3 API, RPC between the nodes.
EXPOSE 3900 3901
ENTRYPOINT ["garage"]
CMD ["server"]
DOCKERFILE
docker build -q -t "$TAG" "$work" >/dev/null
echo "$TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{ printf "%.1f MB", $1 / 1e6 }'), garage sha256 ${sha:0:12})"
