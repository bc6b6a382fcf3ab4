# Helpers for root filesystems of `FROM scratch` test images built from this machine's binaries
# (nothing can be pulled here). Sourced by scripts/standin-images.sh and scripts/garage-image.sh;
# scripts/image-rootfs.sh keeps its own copy because the Dockerfile's from-source stage copies
# that one script alone.

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# Copies BINARY to ROOT/DEST with every library ldd names, at the path the loader looks in
# (ldd prints `name => /path (addr)`, and the loader as `/lib64/ld-linux-x86-64.so.2 (addr)`).
add_binary() {
  local root=$1 binary=$2 dest=$3
  if ldd "$binary" | grep -q 'not found'; then
    die "$binary needs libraries this machine lacks: $(ldd "$binary" | grep 'not found')"
  fi
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$binary" "$root$dest"
  ldd "$binary" | awk '/=> \// { print $3; next } /^[ \t]*\// { print $1 }' | sort -u |
    while read -r lib; do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
}

# /etc/hosts first (docker writes the container's own name and, on some set-ups, the other
# services' there), then DNS (the embedded resolver of user-defined networks); a /tmp.
common_files() {
  local root=$1
  mkdir -p "$root"/etc "$root"/tmp
  chmod 1777 "$root"/tmp
  echo 'hosts: files dns' > "$root"/etc/nsswitch.conf
}
