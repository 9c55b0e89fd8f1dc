#!/usr/bin/env bash
# Installs what the tests need and is not a Go module: Mosquitto (tests'
# MQTT broker, and mosquitto_pub to try the protocol by hand), ClickHouse
# (storage), ZooKeeper (a replicated ClickHouse's coordinator, which the
# cluster tests start), Chromium (the dashboard's browser tests) and npm
# (scripts/web-deps.sh fetches the phones' MQTT client with it). `make test` runs
# it; `make demo` does not (the demo needs only Go). On Debian or
# Ubuntu it uses apt-get (as root, or through sudo); elsewhere it says what to
# install. Safe to run again: it installs only what is missing.
set -euo pipefail

need=()
command -v go >/dev/null || { echo "deps: Go 1.26 or newer is required: https://go.dev/doc/install" >&2; exit 1; }
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto mosquitto-clients)
command -v clickhouse-server >/dev/null || command -v clickhouse >/dev/null || [ -x /usr/sbin/clickhouse-server ] || need+=(clickhouse-server clickhouse-client)
command -v chromium >/dev/null || need+=(chromium)
[ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null || need+=(zookeeper)
# npm fetches the phones' MQTT client at build time (scripts/web-deps.sh).
command -v npm >/dev/null || need+=(npm)

if [ ${#need[@]} -eq 0 ]; then
  echo "deps: everything present"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "deps: missing ${need[*]}; this is not a Debian/Ubuntu machine, so install them with your package manager" >&2
  echo "      (macOS: brew install mosquitto clickhouse chromium zookeeper node). The tests need all five;" >&2
  echo "      ZooKeeper is looked for as Debian installs it, /usr/share/java/zookeeper.jar." >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "deps: run as root or install sudo to apt-get install ${need[*]}" >&2; exit 1; }
  sudo=sudo
fi
echo "deps: installing ${need[*]} with apt-get"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages start system services we do not use: the tests and the demo
# start their own servers on free ports.
for svc in mosquitto clickhouse-server; do
  $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
echo "deps: done"
