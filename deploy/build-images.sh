#!/usr/bin/env bash
# Builds jetflow's container images from static binaries built on this
# machine, with no registry: every image is FROM scratch.
#
#   deploy/build-images.sh            # tags jetflow/{nats,dispatcher,worker,api}:dev
#   TAG=v1 deploy/build-images.sh     # tags :v1
#
# nats-server is built at the version in go.mod. The images are built
# with Docker's classic builder (DOCKER_BUILDKIT=0), which needs no
# frontend image from a registry.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${TAG:-dev}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

export CGO_ENABLED=0
echo "building static binaries into $ctx"
go build -trimpath -o "$ctx/nats-server" github.com/nats-io/nats-server/v2
go build -trimpath -o "$ctx/" ./cmd/dispatcher ./cmd/worker ./cmd/api
cp deploy/docker/nats.conf "$ctx/"

export DOCKER_BUILDKIT=0
docker build -q -f deploy/docker/Dockerfile.nats-prebuilt -t "jetflow/nats:$tag" "$ctx"
for bin in dispatcher worker api; do
	docker build -q -f deploy/docker/Dockerfile.prebuilt --build-arg "BIN=$bin" -t "jetflow/$bin:$tag" "$ctx"
done
echo "built jetflow/nats:$tag jetflow/dispatcher:$tag jetflow/worker:$tag jetflow/api:$tag"
