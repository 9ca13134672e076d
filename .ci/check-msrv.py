#!/usr/bin/env python3
"""The declared MSRV is true as far as it can be checked without that
toolchain: every workspace package inherits it, and no locked dependency
declares a higher `rust-version`. (Our own code against it is checked by
clippy's `incompatible_msrv` lint, which reads the same field, in the
clippy step.)"""
import json
import subprocess
import sys

meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--locked", "--format-version", "1",
     "--filter-platform", "x86_64-unknown-linux-gnu"]))
members = set(meta["workspace_members"])
ver = lambda s: tuple(int(x) for x in (s.split(".") + ["0", "0"])[:3])
declared = {p["name"]: p.get("rust_version") for p in meta["packages"] if p["id"] in members}
bad = [n for n, v in declared.items() if not v]
if bad:
    sys.exit(f"check-msrv: no rust-version in {', '.join(sorted(bad))}")
msrv = max(declared.values(), key=ver)
if any(v != msrv for v in declared.values()):
    sys.exit(f"check-msrv: members disagree: {declared}")
# Dependencies actually in the build graph (resolve), not just the lock.
used = {n["id"] for n in meta["resolve"]["nodes"]}
over = sorted((p["rust_version"], p["name"], p["version"]) for p in meta["packages"]
              if p["id"] in used and p["id"] not in members and p.get("rust_version")
              and ver(p["rust_version"]) > ver(msrv))
if over:
    for v, n, pv in over:
        print(f"  {n} {pv} needs Rust {v}", file=sys.stderr)
    sys.exit(f"check-msrv: the declared rust-version {msrv} is lower than a dependency needs")
top = max(((p["rust_version"], p["name"]) for p in meta["packages"]
           if p["id"] in used and p.get("rust_version") and p["id"] not in members),
          key=lambda t: ver(t[0]))
print(f"check-msrv: OK: rust-version {msrv} in every member; highest dependency need {top[0]} ({top[1]})")
