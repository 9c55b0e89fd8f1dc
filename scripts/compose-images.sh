#!/usr/bin/env bash
# Builds, without any registry, every image compose.yaml names, under the
# names it uses, so that `docker compose up` runs on a machine whose Docker
# engine can pull nothing (`make compose-images`):
#
#   telemetry:dev                       this repository's binary (static)
#   nats:2.15-alpine                    nats-server, built from the Go
#                                       module this repository requires
#   eclipse-mosquitto:2                 Debian's mosquitto and its clients
#   clickhouse/clickhouse-server:24.8   Debian's ClickHouse (18.16)
#
# Each is a root filesystem made here and imported (`docker import`), with
# the paths, users, entrypoints and healthcheck tools of the image it
# stands in for: binaries where the official image has them, busybox for
# wget, the official images' user ids (mosquitto 1883, clickhouse 101).
# Debian's packages provide the programs and their shared libraries,
# copied from this machine (installed with apt-get when missing). A user
# with a registry does not need this: compose pulls the official images
# and builds telemetry:dev from the Dockerfile.
#
# Usage: scripts/compose-images.sh [image ...]   (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
command -v docker >/dev/null || { echo "compose-images: no docker command" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "compose-images: no Docker engine answers (start dockerd)" >&2; exit 1; }

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
need=()
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx wget || need+=(busybox-static)
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
[ -x /usr/bin/mosquitto_sub ] || need+=(mosquitto-clients)
[ -x /usr/sbin/clickhouse-server ] || need+=(clickhouse-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "compose-images: installing ${need[*]} with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  for svc in mosquitto clickhouse-server; do
    $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# copy_file ROOT PATH: PATH into ROOT at the same place, links resolved.
copy_file() {
  mkdir -p "$1$(dirname "$2")"
  cp -L "$2" "$1$2"
}

# copy_program ROOT PATH: the program and every shared library it loads.
copy_program() {
  copy_file "$1" "$2"
  local lib
  for lib in $(ldd "$2" 2>/dev/null | grep -o '/[^ ]*' || true); do
    copy_file "$1" "$lib"
  done
}

# base ROOT: what every image has: /tmp, root in /etc/passwd, busybox's wget
# (the healthchecks call it), and an sh for `docker exec`.
base() {
  mkdir -p "$1"/{bin,etc,tmp,usr/bin}
  chmod 1777 "$1/tmp"
  cp /bin/busybox "$1/bin/busybox"
  ln -s /bin/busybox "$1/usr/bin/wget"
  ln -s /bin/busybox "$1/bin/sh"
  echo "root:x:0:0:root:/root:/bin/sh" >"$1/etc/passwd"
  echo "root:x:0:" >"$1/etc/group"
}

# user ROOT NAME ID: a user and group NAME with uid and gid ID.
user() {
  echo "$2:x:$3:$3:$2:/nonexistent:/bin/false" >>"$1/etc/passwd"
  echo "$2:x:$3:" >>"$1/etc/group"
}

# import ROOT TAG OWNED CHANGES...: ROOT as image TAG, owned by root except
# OWNED ("uid:path,..." of directories), with Dockerfile CHANGES.
import() {
  local root=$1 tag=$2 owned=$3
  shift 3
  local tarball="$work/$(echo "$tag" | tr '/:' '__').tar" entry args=() skip=()
  for entry in ${owned//,/ }; do
    skip+=(--exclude=".${entry#*:}")
  done
  tar --numeric-owner --owner=0 --group=0 "${skip[@]}" -cf "$tarball" -C "$root" .
  for entry in ${owned//,/ }; do
    tar --numeric-owner --owner="${entry%%:*}" --group="${entry%%:*}" --no-recursion -rf "$tarball" -C "$root" ".${entry#*:}"
  done
  for c in "$@"; do
    args+=(--change "$c")
  done
  docker import "${args[@]}" "$tarball" "$tag" >/dev/null
  echo "compose-images: $tag"
}

telemetry_image() {
  local root="$work/telemetry"
  base "$root"
  user "$root" telemetry 1000
  mkdir -p "$root/usr/local/bin" "$root/mosquitto/auth" "$root/mosquitto/dynsec"
  CGO_ENABLED=0 $GO build -trimpath -ldflags "-s -w" -o "$root/usr/local/bin/telemetry" ./cmd/telemetry
  import "$root" telemetry:dev "1883:/mosquitto/auth,1883:/mosquitto/dynsec" \
    'ENV PATH=/usr/local/bin:/usr/bin:/bin' 'USER telemetry' \
    'ENTRYPOINT ["telemetry"]' 'CMD ["--help"]'
}

nats_image() {
  local root="$work/nats"
  base "$root"
  mkdir -p "$root/usr/local/bin" "$root/etc/nats" "$root/data"
  # The version go.mod requires: the servers the tests and the demo embed.
  CGO_ENABLED=0 $GO build -trimpath -ldflags "-s -w" -o "$root/usr/local/bin/nats-server" github.com/nats-io/nats-server/v2
  import "$root" nats:2.15-alpine "" \
    'ENV PATH=/usr/local/bin:/usr/bin:/bin' 'EXPOSE 4222 6222 7422 8222' \
    'ENTRYPOINT ["nats-server"]' 'CMD ["--config", "/etc/nats/nats-server.conf"]'
}

mosquitto_image() {
  local root="$work/mosquitto" p
  base "$root"
  user "$root" mosquitto 1883
  for p in /usr/sbin/mosquitto /usr/bin/mosquitto_sub /usr/bin/mosquitto_pub /usr/bin/mosquitto_passwd; do
    copy_program "$root" "$p"
  done
  # The dynamic security plugin (the phones), where the official image
  # keeps it and mosquitto.conf names it.
  for p in /usr/lib/*/mosquitto_dynamic_security.so; do
    copy_program "$root" "$p"
    cp -L "$p" "$root/usr/lib/mosquitto_dynamic_security.so"
  done
  mkdir -p "$root/mosquitto/config" "$root/mosquitto/data" "$root/mosquitto/log" "$root/mosquitto/dynsec"
  import "$root" eclipse-mosquitto:2 "1883:/mosquitto/data,1883:/mosquitto/log,1883:/mosquitto/dynsec" \
    'ENV PATH=/usr/sbin:/usr/bin:/bin' 'EXPOSE 1883 8083' \
    'CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]'
}

clickhouse_image() {
  local root="$work/clickhouse"
  base "$root"
  user "$root" clickhouse 101
  copy_program "$root" /usr/sbin/clickhouse-server
  mkdir -p "$root/usr/bin"
  mv "$root/usr/sbin/clickhouse-server" "$root/usr/bin/clickhouse-server"
  mkdir -p "$root/etc/clickhouse-server/config.d" "$root/etc/clickhouse-server/users.d" \
    "$root/var/lib/clickhouse" "$root/var/log/clickhouse-server" "$root/usr/share"
  cp -r /usr/share/zoneinfo "$root/usr/share/zoneinfo"
  cp /etc/clickhouse-server/users.xml "$root/etc/clickhouse-server/users.xml"
  # The official image's settings that matter here: listen on every
  # address, data in /var/lib/clickhouse, logs to the console too.
  cat >"$root/etc/clickhouse-server/config.xml" <<'EOF'
<?xml version="1.0"?>
<!-- Stand-in for clickhouse/clickhouse-server (scripts/compose-images.sh). -->
<yandex>
    <logger>
        <level>information</level>
        <console>1</console>
        <log>/var/log/clickhouse-server/clickhouse-server.log</log>
        <errorlog>/var/log/clickhouse-server/clickhouse-server.err.log</errorlog>
        <size>10M</size>
        <count>3</count>
    </logger>
    <listen_host>0.0.0.0</listen_host>
    <http_port>8123</http_port>
    <tcp_port>9000</tcp_port>
    <path>/var/lib/clickhouse/</path>
    <tmp_path>/var/lib/clickhouse/tmp/</tmp_path>
    <user_files_path>/var/lib/clickhouse/user_files/</user_files_path>
    <format_schema_path>/var/lib/clickhouse/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_connections>4096</max_connections>
    <max_concurrent_queries>100</max_concurrent_queries>
    <keep_alive_timeout>3</keep_alive_timeout>
    <mark_cache_size>5368709120</mark_cache_size>
    <uncompressed_cache_size>8589934592</uncompressed_cache_size>
    <mlock_executable>false</mlock_executable>
</yandex>
EOF
  import "$root" clickhouse/clickhouse-server:24.8 "101:/var/lib/clickhouse,101:/var/log/clickhouse-server" \
    'ENV PATH=/usr/bin:/bin' 'EXPOSE 8123 9000' 'USER clickhouse' \
    'ENTRYPOINT ["/usr/bin/clickhouse-server", "--config-file=/etc/clickhouse-server/config.xml"]'
}

images=("$@")
[ ${#images[@]} -gt 0 ] || images=(telemetry nats mosquitto clickhouse)
for i in "${images[@]}"; do
  case $i in
  telemetry | nats | mosquitto | clickhouse) "${i}_image" ;;
  *) echo "compose-images: unknown image $i (telemetry, nats, mosquitto, clickhouse)" >&2; exit 2 ;;
  esac
done
