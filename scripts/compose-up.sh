#!/usr/bin/env bash
# `make compose-up`: the presenters' stack, compose.yaml unchanged, on this
# machine's Docker engine. Installs the compose CLI when missing
# (scripts/compose-cli.sh); when an image compose.yaml names is missing
# and no registry answers a pull, builds them all here
# (scripts/compose-images.sh); then `docker compose up -d --wait`.
# Extra arguments go to `docker compose up`.
set -euo pipefail
cd "$(dirname "$0")/.."

docker info >/dev/null 2>&1 || { echo "compose-up: no Docker engine answers (start dockerd, or Docker Desktop)" >&2; exit 1; }
./scripts/compose-cli.sh

missing=()
for img in $(docker compose config --images | sort -u); do
  docker image inspect "$img" >/dev/null 2>&1 || missing+=("$img")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "compose-up: missing ${missing[*]}; trying the registry"
  if ! timeout 120 docker compose pull --ignore-buildable --quiet; then
    echo "compose-up: no registry answers: building the images here"
    ./scripts/compose-images.sh
  fi
fi
exec docker compose up -d --wait "$@"
