#!/bin/sh
# Install the Debian packages mdenas builds and tests with (apt-get is idempotent).
# Extra packages may be given as arguments. MDENAS_NO_APT=1 skips this step.
set -eu
[ "${MDENAS_NO_APT:-0}" = 1 ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential cmake pkg-config libdnnl-dev libopenmpi-dev openmpi-bin zlib1g-dev \
    dataset-fashion-mnist python3-pip "$@"
