#!/usr/bin/env bash
# CI step: vendor/glommio must be exactly glommio 0.9.0 as published on
# crates.io plus the patches in notes/, applied in the order of PATCHES below
# (the order notes/glommio-coop-taskrun.md documents). Fetches the .crate
# (or takes a cached copy), checks its sha256 against the pinned one,
# extracts it, applies the patches with no fuzz and compares the result with
# vendor/glommio, every file included. Prints one OK line, or the difference
# and exits 1.
#
# Usage: .ci/check-vendor.sh   (from anywhere; needs curl unless the crate is
# cached, tar, patch, diff, sha256sum)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

NAME=glommio
VERSION=0.9.0
# The "cksum" of glommio 0.9.0 in the crates.io index
# (https://index.crates.io/gl/om/glommio), i.e. the sha256 of the .crate.
SHA256=e1f8bc1fce949d18098dc0a4e861314e40351a0144ebf61e59bdb5254a2273b2
URL="https://static.crates.io/crates/$NAME/$NAME-$VERSION.crate"
VENDOR=vendor/glommio

# Applied in this order.
PATCHES=(
  notes/glommio-reactor-deadline.patch
  notes/glommio-coop-taskrun.patch
  notes/glommio-idle-memory.patch
)
# In notes/ but not applied: superseded, kept as a record
# (notes/glommio-reactor-timers.md says why).
NOT_APPLIED=(
  notes/glommio-reactor-timers.patch
)

fail() {
  echo "check-vendor: FAIL: $*" >&2
  exit 1
}

for tool in tar patch diff sha256sum; do
  command -v "$tool" >/dev/null || fail "needs $tool"
done

# A new patch in notes/ must be put in one of the two lists, so that it is
# not silently left out of (or into) the check.
for p in notes/*.patch; do
  [ -e "$p" ] || continue
  listed=no
  for q in "${PATCHES[@]}" "${NOT_APPLIED[@]}"; do
    [ "$p" = "$q" ] && listed=yes
  done
  [ "$listed" = yes ] || fail "$p is in neither PATCHES nor NOT_APPLIED in $0"
done
for p in "${PATCHES[@]}"; do
  [ -f "$p" ] || fail "$p is missing"
done

sha_ok() {
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]
}

# The crate: a copy already on this machine (cargo's own download cache, our
# cache, /tmp) if its checksum matches, else downloaded into our cache.
CACHE_DIR="${CARGO_HOME:-$HOME/.cargo}/shadowtee-check-vendor"
if ! mkdir -p "$CACHE_DIR" 2>/dev/null || [ ! -w "$CACHE_DIR" ]; then
  CACHE_DIR=/tmp
fi
CRATE=
shopt -s nullglob
for c in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$NAME-$VERSION.crate" \
  "$CACHE_DIR/$NAME-$VERSION.crate" "/tmp/$NAME-$VERSION.crate"; do
  if sha_ok "$c"; then
    CRATE=$c
    break
  fi
done
shopt -u nullglob
if [ -z "$CRATE" ]; then
  command -v curl >/dev/null || fail "needs curl to download $URL"
  CRATE="$CACHE_DIR/$NAME-$VERSION.crate"
  part="$CRATE.part.$$"
  curl -sSfL --retry 3 -o "$part" "$URL" || {
    rm -f "$part"
    fail "could not download $URL"
  }
  if ! sha_ok "$part"; then
    got=$(sha256sum "$part" | cut -d' ' -f1)
    rm -f "$part"
    fail "$URL has sha256 $got, expected $SHA256"
  fi
  mv -f "$part" "$CRATE"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-vendor.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
tar -xzf "$CRATE" -C "$WORK"
EXPECTED="$WORK/$NAME-$VERSION"
[ -d "$EXPECTED" ] || fail "$CRATE does not hold $NAME-$VERSION/"

for p in "${PATCHES[@]}"; do
  # --fuzz=0: every hunk must apply with its full context (an offset is
  # reported, a fuzzed match is a failure); --forward: an already-applied or
  # reversed hunk fails instead of prompting; -E: files the patch empties are
  # removed, as in vendor/glommio.
  if ! out=$(patch -d "$EXPECTED" -p1 -E --forward --fuzz=0 \
    --no-backup-if-mismatch -i "$ROOT/$p" </dev/null 2>&1); then
    echo "$out" >&2
    fail "$p does not apply cleanly to $NAME $VERSION + the patches before it"
  fi
  if grep -q "offset" <<<"$out"; then
    echo "check-vendor: note: $p applies with offsets; regenerate it:" >&2
    grep "offset" <<<"$out" >&2
  fi
done

# The whole tree, nothing excluded: vendor/glommio is used as glommio's
# source, so anything in it that the crate and the patches do not produce is
# a difference. (A local `cargo build` run inside vendor/glommio leaves a
# Cargo.lock there, and a target/ without CARGO_TARGET_DIR: those show up
# here too; CI runs on a clean checkout.)
if ! d=$(cd "$WORK" && diff -ru "$NAME-$VERSION" "$ROOT/$VENDOR" 2>&1); then
  echo "$d"
  fail "$VENDOR differs from $NAME $VERSION (crates.io) + ${PATCHES[*]} (above: - expected, + $VENDOR)"
fi
echo "check-vendor: OK: $VENDOR = $NAME $VERSION from crates.io (sha256 $SHA256) + ${PATCHES[*]}"
