# One image for every telemetry service in compose.yaml: the command picks
# the component (telemetry ingest, storage, dashboard, ...).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/telemetry ./cmd/telemetry

# Alpine for busybox wget, which the healthchecks use. /mosquitto/auth is
# where compose's mqtt-passwd writes Mosquitto's password file, as
# Mosquitto's user (1883): a volume mounted there starts owned by it.
FROM alpine:3.20
RUN adduser -D -H telemetry \
 && mkdir -p /mosquitto/auth && chown 1883:1883 /mosquitto/auth
COPY --from=build /out/telemetry /usr/local/bin/telemetry
USER telemetry
ENTRYPOINT ["telemetry"]
CMD ["--help"]
