# meshlb as an image FROM scratch: no base image is pulled, so it builds
# where no registry can be reached. The binary is built static on the host
# first (make image does both):
#
#   CGO_ENABLED=0 go build -trimpath -o bin/docker/meshlb ./cmd/meshlb
#   docker build -t meshlb:dev .
#
# The pure-Go resolver reads the /etc/resolv.conf and /etc/hosts that
# Docker mounts, so service names and network aliases resolve.
FROM scratch
COPY bin/docker/meshlb /meshlb
# nobody: meshlb binds only ports above 1024.
USER 65534:65534
EXPOSE 8080 9901 7946 7946/udp
ENTRYPOINT ["/meshlb"]
CMD ["--help"]
