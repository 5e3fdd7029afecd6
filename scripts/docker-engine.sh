#!/usr/bin/env bash
# docker-engine.sh: make sure a Docker engine answers on this machine.
#
# Idempotent: installs docker.io and docker-compose (Debian apt) when they
# are missing, starts dockerd in the background with the vfs storage driver
# (and its default bridge) when `docker info` fails, and waits (bounded by
# DOCKER_WAIT, default 60 seconds) until it answers. Safe to run again and
# again; it never stops a running engine.
#
#   DOCKER_LOG   dockerd's log file (default /tmp/dockerd.log)
#   DOCKER_WAIT  seconds to wait for the engine (default 60)
set -euo pipefail

log_file="${DOCKER_LOG:-/tmp/dockerd.log}"
wait_s="${DOCKER_WAIT:-60}"
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

# Debian packages for what is missing: the engine, and docker-compose (for
# `make compose-config` and the compose targets).
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
	echo "docker-engine: installing ${missing[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
	echo "docker-engine: engine already answers"
	exit 0
fi

pid_file=/var/run/docker.pid
if ! { [ -s "$pid_file" ] && [ -d "/proc/$(cat "$pid_file")" ]; }; then
	echo "docker-engine: starting dockerd (vfs), log in $log_file"
	$sudo setsid dockerd --storage-driver=vfs >"$log_file" 2>&1 </dev/null &
fi

for _ in $(seq "$wait_s"); do
	if docker info >/dev/null 2>&1; then
		echo "docker-engine: engine answers ($(docker version --format '{{.Server.Version}}'))"
		exit 0
	fi
	sleep 1
done
echo "docker-engine: no answer from dockerd after ${wait_s}s; last lines of $log_file:" >&2
tail -n 30 "$log_file" >&2 || true
exit 1
