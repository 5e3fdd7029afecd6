# fedbus runtime image (fedbus:dev): the static binaries (CGO_ENABLED=0)
# that `make images` builds into bin/image, on an empty base. No shell, no
# package manager, no CA bundle (federation trusts FED_TLS_CA only).
#
# Build context: bin/image (see the Makefile target `images`):
#   docker build -f Dockerfile -t fedbus:dev bin/image
# Pick the program with the command: /federator (default), /ingress,
# /devdns, /standin, /fedcerts.
FROM scratch
COPY federator ingress devdns standin fedcerts /
USER 65532:65532
CMD ["/federator"]
