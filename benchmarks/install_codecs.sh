#!/bin/sh
# Install the classical codec tools the benchmark runs (Debian/Ubuntu; run as root or through sudo).
# Each package is installed on its own, so that one missing from the distribution skips only that codec.
set -u
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update || echo "warning: apt-get update failed" >&2
for pkg in libjpeg-turbo-progs webp libopenjp2-tools libavif-bin libjxl-tools ffmpeg x265; do
    if DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$pkg"; then
        echo "installed $pkg"
    else
        echo "warning: could not install $pkg; the benchmark will skip the codecs that need it" >&2
    fi
done
