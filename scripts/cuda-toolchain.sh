#!/usr/bin/env bash
# Makes a CUDA 12.4 compiler prefix in $1 (default build/cuda) without touching the system: nvcc
# with sm_90a support, ptxas, the CUDA headers and the libcuda.so link stub, unpacked from Debian
# sid's non-free packages (nvidia-cuda-toolkit, nvidia-cuda-dev, libnvvm4) with a private apt
# state. About 1 GB is downloaded once; the prefix is about 140 MB. Only `make ptx` and the
# `-tags cuda` build need it; the default build and `make test` never do.
#
# CUDA 12 on purpose: gorgonia.org/cu v0.9.6 calls the 3-argument cuCtxCreate of the CUDA 12
# headers, which CUDA 13 replaced.
set -euo pipefail
prefix=$(realpath -m "${1:-build/cuda}")
if [ -x "$prefix/bin/nvcc" ]; then
	exit 0
fi
p=$(mktemp -d)
trap 'rm -rf "$p"' EXIT
mkdir -p "$p/lists/partial" "$p/cache/archives/partial"
touch "$p/status"
echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid non-free' >"$p/sources.list"
apt=(-o "Dir::Etc::sourcelist=$p/sources.list" -o Dir::Etc::sourceparts=/nonexistent
	-o "Dir::State::Lists=$p/lists" -o "Dir::Cache=$p/cache" -o "Dir::State::status=$p/status")
echo "cuda-toolchain: fetching the CUDA packages from Debian sid non-free (about 1 GB)" >&2
apt-get "${apt[@]}" -qq update
(cd "$p" && apt-get "${apt[@]}" -qq download nvidia-cuda-toolkit nvidia-cuda-dev libnvvm4)
for d in "$p"/*.deb; do dpkg -x "$d" "$p/x"; done
x=$p/x
mkdir -p "$prefix/bin" "$prefix/lib"
cp -a "$x/usr/include" "$prefix/include"
cp -a "$x/usr/lib/nvidia-cuda-toolkit/bin/nvcc" "$x/usr/lib/nvidia-cuda-toolkit/bin/cicc" "$prefix/bin/"
cp -a "$x/usr/bin/ptxas" "$x/usr/bin/fatbinary" "$x/usr/bin/nvlink" "$x/usr/bin/cudafe++" "$x/usr/bin/bin2c" "$prefix/bin/"
cp -a "$x/usr/lib/nvidia-cuda-toolkit/libdevice" "$prefix/"
cp "$x/usr/lib/x86_64-linux-gnu/stubs/libcuda.so" "$prefix/lib/"
cat >"$prefix/bin/nvcc.profile" <<'P'
TOP = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/libdevice
PATH += $(_HERE_):
INCLUDES += "-I$(TOP)/include" $(_SPACE_)
LIBRARIES =+ $(_SPACE_) "-L$(TOP)/lib"
P
version=$("$prefix/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
case "$version" in
12.*) echo "cuda-toolchain: nvcc $version in $prefix" >&2 ;;
*)
	echo "cuda-toolchain: Debian now ships nvcc '$version'; this script expects 12.x (see its header)" >&2
	rm -rf "$prefix"
	exit 1
	;;
esac
