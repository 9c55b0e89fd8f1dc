#!/usr/bin/env bash
# The phones' page (join/web) publishes with mqtt.js, an MQTT client for
# browsers from npm. It is fetched here, at build time, at the version and
# npm integrity pinned below, and the binary embeds it (join/web/vendor,
# not in git). `make web-deps` and `make test` run this; without it the
# binary still builds, and its /join page says the client is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

version=5.16.0
integrity=sha512-G0VsEtuJz5sJUgZJaaADMVfW7SIFPzkIuHR+d6rk+tBeSwdCfd9BaIRycRfd2AbyFDEmLlFM+SDQeti/+IbOnw==
out=join/web/vendor
stamp="$out/mqtt-$version.integrity"

if [ -f "$out/mqtt.min.js" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$integrity" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "web-deps: npm is needed to fetch mqtt@$version (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "mqtt@$version" >/dev/null)
tgz="$tmp/mqtt-$version.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$got" != "$integrity" ]; then
  echo "web-deps: mqtt@$version from npm has integrity $got, want $integrity" >&2
  exit 1
fi
tar -xzf "$tgz" -C "$tmp" package/dist/mqtt.min.js package/LICENSE.md
mkdir -p "$out"
cp "$tmp/package/dist/mqtt.min.js" "$out/mqtt.min.js"
cp "$tmp/package/LICENSE.md" "$out/mqtt.LICENSE.md"
echo "$integrity" > "$stamp"
echo "web-deps: mqtt@$version in $out"
