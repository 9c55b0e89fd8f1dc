# One image for every telemetry service in compose.yaml: the command picks
# the component (telemetry ingest, storage, dashboard, ...).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/telemetry ./cmd/telemetry

# Alpine for busybox wget, which the healthchecks use.
FROM alpine:3.20
RUN adduser -D -H telemetry
COPY --from=build /out/telemetry /usr/local/bin/telemetry
USER telemetry
ENTRYPOINT ["telemetry"]
CMD ["--help"]
