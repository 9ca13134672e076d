#!/usr/bin/env python3
"""No import circle between the engine's top-level modules.

Each file under engine/src belongs to the top-level module its path starts
with (engine/src/exchange/settle.rs -> exchange; engine/src/shared.rs ->
shared). A module depends on another when any of its files names
`crate::other` outside a comment. The check fails if the dependency graph
has a cycle, and prints the graph (module: what it imports), lowest layer
first, so the layering can be read off it.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "engine" / "src"
# The binary (main.rs and its cli/ modules) uses the library from outside.
SKIP = {"main", "cli", "lib"}

def module_of(path):
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")

def code_lines(text):
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("//"):
            continue
        yield line.split("//", 1)[0]

deps = {}
for f in sorted(SRC.rglob("*.rs")):
    m = module_of(f)
    if m in SKIP:
        continue
    names = deps.setdefault(m, set())
    text = f.read_text()
    for line in code_lines(text):
        for other in re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", line):
            if other != m:
                names.add(other)
        # `use crate::{a, b::c}` groups
        for group in re.findall(r"\bcrate::\{([^}]*)\}", line):
            for other in re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group):
                if other != m:
                    names.add(other)

for m in deps:
    deps[m] &= set(deps)  # re-exported crates (h1) are not modules here

# Topological order (Kahn); whatever is left is in or behind a cycle.
order, left = [], {m: set(d) for m, d in deps.items()}
while True:
    ready = sorted(m for m, d in left.items() if not d)
    if not ready:
        break
    for m in ready:
        order.append(m)
        del left[m]
    for d in left.values():
        d.difference_update(ready)

for m in order:
    print(f"{m:>10}: {', '.join(sorted(deps[m])) or '-'}")
if left:
    print("IMPORT CIRCLE among:", ", ".join(sorted(left)), file=sys.stderr)
    for m in sorted(left):
        print(f"  {m} imports {', '.join(sorted(deps[m] & set(left)))}", file=sys.stderr)
    sys.exit(1)
print(f"check-layers: OK: {len(order)} modules, no import circle")
