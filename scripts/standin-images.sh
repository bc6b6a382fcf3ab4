#!/usr/bin/env bash
# Builds stand-ins for the official nginx and redis images from this machine's Debian binaries,
# for tests/compose.rs: no image can be pulled here, so the compose examples are run with an
# override file that swaps `nginx:…`/`redis:…` for these. Each is `FROM scratch` with the binary,
# exactly the shared libraries `ldd` names (and the loader), and the few files the program needs,
# laid out where the official image has them:
#   berth-standin-nginx:debian  nginx-light's /usr/sbin/nginx, /etc/nginx/mime.types, a passwd
#                               with www-data (uid/gid 33, as in the official Debian-based
#                               image), the log/temp/run directories; `nginx -g 'daemon off;'`,
#                               stopped with SIGQUIT as the official image is.
#   berth-standin-redis:debian  redis-server and redis-cli, /data as the working directory;
#                               `redis-server --protected-mode no`, which the official image
#                               compiles in (without it Redis refuses other containers).
#
#   scripts/standin-images.sh            build both (a second or two; docker caches layers)
#
# Needs the Docker engine and Debian's nginx-light and redis-server (`make deps` installs them).
set -euo pipefail

NGINX_TAG=berth-standin-nginx:debian
REDIS_TAG=berth-standin-redis:debian

. "$(dirname "$0")/scratch-rootfs.sh"
for tool in docker ldd; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
[ -x /usr/sbin/nginx ] || die "/usr/sbin/nginx is missing (apt-get install nginx-light)"
[ -f /etc/nginx/mime.types ] || die "/etc/nginx/mime.types is missing (apt-get install nginx-common)"
[ -x /usr/bin/redis-server ] || die "/usr/bin/redis-server is missing (apt-get install redis-server)"
[ -x /usr/bin/redis-cli ] || die "/usr/bin/redis-cli is missing (apt-get install redis-tools)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# nginx: the master runs as root (binds 443, reads the TLS key), workers as the `user` of
# nginx.conf. Paths are the ones Debian's nginx was compiled with (`nginx -V`).
nginx=$work/nginx
common_files "$nginx/rootfs"
add_binary "$nginx/rootfs" /usr/sbin/nginx /usr/sbin/nginx
mkdir -p "$nginx"/rootfs/etc/nginx "$nginx"/rootfs/var/log/nginx "$nginx"/rootfs/var/lib/nginx \
  "$nginx"/rootfs/run "$nginx"/rootfs/var/lock "$nginx"/rootfs/usr/share/nginx
cp /etc/nginx/mime.types "$nginx"/rootfs/etc/nginx/mime.types
# As in the official image: the access log goes to docker's log.
ln -s /dev/stdout "$nginx"/rootfs/var/log/nginx/access.log
cat > "$nginx"/rootfs/etc/passwd <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat > "$nginx"/rootfs/etc/group <<'EOF'
root:x:0:
www-data:x:33:
nogroup:x:65534:
EOF
cat > "$nginx"/Dockerfile <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/sbin:/usr/bin
EXPOSE 80 443
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
EOF
docker build -q -t "$NGINX_TAG" "$nginx" >/dev/null

# redis: Debian's redis-server is a link to redis-check-rdb, which picks its role by argv[0],
# so it is copied under the server's name.
redis=$work/redis
common_files "$redis/rootfs"
add_binary "$redis/rootfs" /usr/bin/redis-server /usr/bin/redis-server
add_binary "$redis/rootfs" /usr/bin/redis-cli /usr/bin/redis-cli
mkdir -p "$redis"/rootfs/data
cat > "$redis"/rootfs/etc/passwd <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
EOF
cat > "$redis"/rootfs/etc/group <<'EOF'
root:x:0:
EOF
cat > "$redis"/Dockerfile <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/bin
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
EOF
docker build -q -t "$REDIS_TAG" "$redis" >/dev/null

echo "$NGINX_TAG $REDIS_TAG"
