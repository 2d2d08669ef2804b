# Build the manager exactly as `make build` does, then ship it on a distroless non-root image.
# There is no Docker engine on the development machines: build this image elsewhere
# (e.g. `docker build -t ghcr.io/smi2istio/smi2istio:0.1.0 .`).
FROM golang:1.26 AS builder
WORKDIR /workspace
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make build BIN=/workspace/manager

FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /workspace/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
