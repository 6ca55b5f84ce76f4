#!/usr/bin/env bash
# Prints the sha256 of what a kernel family's PTX is made from: its .cu, then every header of
# kernels/ it includes, directly or through another header, in name order. `make ptx` appends
# it to the PTX file as "// source sha256 …"; kernels.TestPTXSources computes the same.
set -euo pipefail
cu=$1
dir=$(dirname "$cu")
seen=()
todo=("$cu")
while ((${#todo[@]})); do
	f=${todo[0]}
	todo=("${todo[@]:1}")
	for h in $(sed -n 's/^#include "\(.*\.cuh\)".*/\1/p' "$f"); do
		[[ " ${seen[*]} " == *" $h "* ]] && continue
		seen+=("$h")
		todo+=("$dir/$h")
	done
done
headers=()
((${#seen[@]})) && mapfile -t headers < <(printf '%s\n' "${seen[@]}" | LC_ALL=C sort | sed "s|^|$dir/|")
cat "$cu" "${headers[@]}" | sha256sum | cut -c1-64
