# fedbus runtime image (fedbus:dev): the static binaries (CGO_ENABLED=0)
# that `make images` builds into bin/image, on an empty base. No shell, no
# package manager, no CA bundle (federation trusts FED_TLS_CA only).
#
# Build context: bin/image (see the Makefile target `images`):
#   docker build -f Dockerfile --build-arg VERSION=v1.2.3 --build-arg REVISION=<commit> -t fedbus:dev bin/image
# Pick the program with the command: /federator (default), /ingress,
# /fedctl, /devdns, /standin, /fedcerts. Each prints its version with
# -version.
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="fedbus" \
      org.opencontainers.image.description="Federation gateway for Wire-style chat backends: federator, ingress and fedctl (plus devdns, standin and fedcerts for development)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/fedbus/fedbus" \
      org.opencontainers.image.documentation="https://github.com/fedbus/fedbus/blob/main/README.md"
COPY federator ingress fedctl devdns standin fedcerts /
USER 65532:65532
CMD ["/federator"]
