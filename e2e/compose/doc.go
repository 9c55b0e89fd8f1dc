// Package compose runs the presenters' stack, compose.yaml unchanged, on a
// real Docker engine: the images built here without a registry
// (scripts/compose-images.sh), `docker compose up --wait`, a load test
// from the host with `telemetry bench`, and the faults a presenter shows,
// done to the containers for real (a container killed or stopped, a
// container cut from its network), each followed by a ledger that must
// show nothing lost. Its only test needs a Docker engine with the compose
// plugin: it skips without one, and fails without one in CI.
package compose
