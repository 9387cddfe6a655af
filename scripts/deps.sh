#!/bin/sh
# Install the Debian packages mdenas builds and tests with (apt-get is idempotent).
# Extra packages may be given as arguments. MDENAS_NO_APT=1 skips this step.
# Checked on a minimal Debian 12 (mmdebstrap --variant=minbase, as .ci/run does):
#   build-essential cmake pkg-config   the build (C11 compiler, make, CMake; pkg-config is
#                                      not used by CMakeLists.txt today)
#   libdnnl-dev                        oneDNN, the CPU backend
#   libopenmpi-dev openmpi-bin         MPI (mpirun; Open MPI needs /proc and /dev/shm)
#   zlib1g-dev                         Fashion-MNIST's .gz files
#   dataset-fashion-mnist              the data of the main job and of the tests
#   python3                            the e2e tests (/usr/bin/python3, stdlib only)
#   python3-pip ca-certificates        pip from PyPI over https (scripts/test.sh)
#   libjpeg62-turbo-dev                libjpeg-turbo, the ImageNet source's region decode (src/data/jpeg.c)
#   mate-backgrounds                   photos test_jpeg and bench/decode_bench.sh make JPEGs from
#   python3-pil                        tests/jpeg_pil_check.py (the resize and decode against Pillow)
#   libjpeg-turbo-progs                tjbench, the decode-only peer of bench/decode_bench.sh
#   libspng-dev                        PNG sources of imagenet_prep (ImageNet has a PNG named .JPEG)
#   python3-numpy                      tests/prep_e2e.py: CMYK/YCCK test images, PSNR against Pillow
#                                      (its tree also needs jpegtran, from libjpeg-turbo-progs)
#   python3-torch                      PyTorch (CPU): tests/proxyless_ref.py, the independent
#                                      ProxylessNAS builder a mobile export is loaded into
#   (bench/decode_bench.sh also compares with torchvision: ./scripts/deps.sh python3-torchvision)
set -eu
[ "${MDENAS_NO_APT:-0}" = 1 ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential cmake pkg-config libdnnl-dev libopenmpi-dev openmpi-bin zlib1g-dev \
    dataset-fashion-mnist python3 python3-pip ca-certificates \
    libjpeg62-turbo-dev mate-backgrounds python3-pil libjpeg-turbo-progs \
    libspng-dev python3-numpy python3-torch "$@"
