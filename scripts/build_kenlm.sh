#!/usr/bin/env bash
# Build KenLM's lmplz and build_binary from the kenlm source distribution on PyPI.
# usage: build_kenlm.sh TOOLS_DIR PIP
set -euo pipefail
tools=$1; pip=$2
mkdir -p "$tools/src" "$tools/bin"
src=$(ls -d "$tools"/src/kenlm*/ 2>/dev/null | head -n1 || true)
if [ -z "$src" ]; then
  "$pip" download -q --no-deps --no-binary kenlm -d "$tools/src" kenlm
  archive=$(ls "$tools"/src/kenlm*.tar.gz | head -n1)
  tar -xzf "$archive" -C "$tools/src"
  src=$(ls -d "$tools"/src/kenlm*/ | head -n1)
fi
mkdir -p "$src/build"
cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >/dev/null
make -C "$src/build" -j2 lmplz build_binary > "$tools/kenlm-build.log" 2>&1 || { tail -n 30 "$tools/kenlm-build.log"; exit 1; }
cp "$src/build/bin/lmplz" "$src/build/bin/build_binary" "$tools/bin/"
echo "built $tools/bin/lmplz and $tools/bin/build_binary"
