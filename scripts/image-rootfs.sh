#!/usr/bin/env bash
# Assembles the root filesystem of the berth container image: the stripped binary, exactly the
# shared libraries `ldd` names (with the loader), Debian's CA certificates, a minimal
# /etc/passwd and /etc/group, the image's configuration and the empty directories it serves from.
# The Dockerfile copies the result into a `FROM scratch` image, so the image holds nothing the
# binary does not load (no shell, no package manager) and builds without pulling a base image.
#
#   scripts/image-rootfs.sh BINARY OUT_DIR
#
# Runs on this machine (`make image`) and inside the Dockerfile's from-source build stage.
# scripts/image-bench.sh packs another registry the same way for a like-for-like comparison:
# ROOTFS_NAME (default berth) names the binary in /usr/local/bin, ROOTFS_CONFIG (default
# docker/config.yml) is the file copied to /etc/docker/registry/config.yml.
set -euo pipefail

binary=${1:?usage: image-rootfs.sh BINARY OUT_DIR}
out=${2:?usage: image-rootfs.sh BINARY OUT_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
name=${ROOTFS_NAME:-berth}
config=${ROOTFS_CONFIG:-$here/docker/config.yml}

for tool in ldd strip; do
  command -v "$tool" >/dev/null || { echo "image-rootfs.sh: $tool is missing (apt-get install binutils libc-bin)" >&2; exit 1; }
done
[ -x "$binary" ] || { echo "image-rootfs.sh: $binary is not an executable (run cargo build --release)" >&2; exit 1; }
# Debian's ca-certificates as shipped: the Mozilla set only, not this machine's own additions
# (/usr/local/share/ca-certificates), which have no business in an image handed to others.
mozilla=/usr/share/ca-certificates/mozilla
ls "$mozilla"/*.crt >/dev/null 2>&1 || { echo "image-rootfs.sh: no CA certificates in $mozilla (apt-get install ca-certificates)" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"/usr/local/bin "$out"/etc/ssl/certs "$out"/etc/docker/registry \
  "$out"/var/lib/registry "$out"/tmp "$out"/usr/lib/ssl
chmod 1777 "$out"/tmp

strip --strip-all -o "$out/usr/local/bin/$name" "$binary"

# Every library at the path the loader will look for it (ldd prints `name => /path (addr)`, and
# the loader itself as `/lib64/ld-linux-x86-64.so.2 (addr)`); symlinks are copied as files.
ldd "$binary" | awk '/=> \// { print $3; next } /^[ \t]*\// { print $1 }' | sort -u |
  while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done
if ldd "$binary" | grep -q 'not found'; then
  echo "image-rootfs.sh: $binary needs libraries this machine lacks:" >&2
  ldd "$binary" | grep 'not found' >&2
  exit 1
fi

cat "$mozilla"/*.crt > "$out"/etc/ssl/certs/ca-certificates.crt
# OpenSSL's compiled-in default paths on Debian (/usr/lib/ssl/{certs,cert.pem}), as
# ca-certificates links them.
ln -s ../../../etc/ssl/certs "$out"/usr/lib/ssl/certs
ln -s ../../../etc/ssl/certs/ca-certificates.crt "$out"/usr/lib/ssl/cert.pem

cat > "$out"/etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
cat > "$out"/etc/group <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
# /etc/hosts first (docker writes container names there), then DNS: glibc's default without
# this file asks DNS first.
echo 'hosts: files dns' > "$out"/etc/nsswitch.conf

cp "$config" "$out"/etc/docker/registry/config.yml

echo "image-rootfs.sh: $(du -sh "$out" | cut -f1) in $out"
