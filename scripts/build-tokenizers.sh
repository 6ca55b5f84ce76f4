#!/usr/bin/env bash
# Builds libtokenizers.a, the Rust half of github.com/daulet/tokenizers, from the sources in the Go
# module cache, into the folder given as $2. cargo takes every crate from crates.io and keeps the
# module's own Cargo.lock, so the build is the one the module was released with.
set -euo pipefail
version=$1
out=$2
command -v cargo >/dev/null || { echo "build-tokenizers: cargo not found; install Rust (rustup or your distribution's rustc >= 1.70)" >&2; exit 1; }
src=$(go mod download -json "github.com/daulet/tokenizers@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "build-tokenizers: module github.com/daulet/tokenizers@$version not in the module cache" >&2; exit 1; }
work=$out/src
rm -rf "$work"
mkdir -p "$out"
cp -r "$src" "$work"
chmod -R u+w "$work"
echo "build-tokenizers: cargo build of github.com/daulet/tokenizers@$version (about a minute the first time)" >&2
(cd "$work" && cargo build --release --locked --quiet)
cp "$work/target/release/libtokenizers.a" "$out/libtokenizers.a"
