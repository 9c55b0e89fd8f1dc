#!/usr/bin/env bash
# Installs the Docker Compose CLI plugin (`docker compose`) when the docker
# command has none: built from its Go module (github.com/docker/compose/v5,
# the version below) through the Go module proxy, into
# ~/.docker/cli-plugins/docker-compose. Safe to run again: it does nothing
# when `docker compose version` answers.
set -euo pipefail

VERSION=v5.6.0
GO=${GO:-go}

if docker compose version >/dev/null 2>&1; then
  exit 0
fi
echo "compose-cli: building docker compose $VERSION from the Go module proxy (a few minutes, once)"
# `go install` refuses this module (its go.mod has exclude directives), so
# it is built where the module proxy put its source. (Outside this
# repository, so that its go.mod is left alone.)
cd "${TMPDIR:-/tmp}"
dir=$($GO mod download -json "github.com/docker/compose/v5@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] || { echo "compose-cli: could not download github.com/docker/compose/v5@$VERSION" >&2; exit 1; }
mkdir -p "$HOME/.docker/cli-plugins"
(cd "$dir" && CGO_ENABLED=0 $GO build -trimpath -ldflags "-s -w" -o "$HOME/.docker/cli-plugins/docker-compose" ./cmd)
docker compose version
