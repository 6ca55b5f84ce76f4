#!/usr/bin/env bash
# Prints ptxas's resource report (registers, shared memory, stack, spills) for sm_90 (sm_90a where the
# PTX targets it) of each PTX file given, one line per kernel: the table kept in kernels/README.md.
set -euo pipefail
ptxas=${PTXAS:-build/cuda/bin/ptxas}
printf '| kernel | registers | static smem (B) | stack (B) | spill st/ld (B) |\n| --- | --- | --- | --- | --- |\n'
for f in "$@"; do
	arch=sm_90
	grep -q '^\.target sm_90a' "$f" && arch=sm_90a
	"$ptxas" -arch=$arch -v "$f" -o /dev/null 2>&1 | awk '
		/Compiling entry function/ { if (name != "") print row(); name = $7; gsub(/\047/, "", name); regs = 0; smem = 0; stack = 0; sst = 0; sld = 0 }
		/bytes stack frame/ { stack = $1; sst = $5; sld = $9 }
		/Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) { if ($i ~ /^registers/) regs = $(i-1); if ($i == "smem") smem = $(i-2) } }
		function row() { return sprintf("| %s | %s | %s | %s | %s/%s |", name, regs, smem, stack, sst, sld) }
		END { if (name != "") print row() }'
done
