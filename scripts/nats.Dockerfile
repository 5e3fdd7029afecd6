# A NATS server image (fedbus-nats:dev) for machines without a registry:
# the static nats-server that `make images` builds from the version pinned
# in go.mod, on an empty base. Entrypoint and ports as in the official
# image (nats:2.x), so it can stand in for it.
#
# Build context: bin/nats (see the Makefile target `images`).
FROM scratch
COPY nats-server /nats-server
USER 65532:65532
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
CMD ["-a", "127.0.0.1"]
