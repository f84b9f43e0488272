#!/usr/bin/env python
"""No forward references: a notebook may only import modules that notebooks before it (in the sidebar's reading order)
export. Prints each violation (notebook, cell, module, the notebook that exports it) and exits 1 if there is any.

    .venv/bin/python tools/check_order.py
"""
import json, re, sys
from pathlib import Path

NBS = Path(__file__).resolve().parents[1] / "nbs"
IMPORT = re.compile(r"^\s*(?:from\s+(?:deit_scratch)?\.?([\w.]*)\s+import|import\s+deit_scratch\.([\w.]+))", re.M)

def reading_order() -> list:
    return [n for n in re.findall(r"([\w.-]+\.ipynb)", (NBS/"sidebar.yml").read_text()) if n != "index.ipynb"]

def cells(nb:Path) -> list: return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]

def module_of(nb:Path) -> str|None:
    m = next((re.search(r"^#\|\s*default_exp\s+(\S+)", s, re.M) for s in cells(nb) if "default_exp" in s), None)
    return m[1] if m else None

def violations() -> list:
    order = reading_order()
    owner = {module_of(NBS/n): i for i, n in enumerate(order)}
    out = []
    for i, name in enumerate(order):
        for j, src in enumerate(cells(NBS/name)):
            for m in IMPORT.finditer(src):
                line = src[m.start():src.find("\n", m.start()) if "\n" in src[m.start():] else None]
                if "deit_scratch" not in line and not line.lstrip().startswith("from ."): continue
                mod = (m[1] or m[2] or "").split(".")[0]
                if mod in owner and owner[mod] > i: out.append((name, j, mod, order[owner[mod]]))
    return out

# Known forward references still to restructure (issue 11). The check fails on any other one, and on an entry here
# that no longer happens (remove it then), so the list can only shrink.
KNOWN = {("02_tokens.ipynb", "pos_interpolation")}        # DeiTEmbeddings interpolates its position table (notebook 03)

if __name__ == "__main__":
    found = violations()
    bad = [v for v in found if (v[0], v[2]) not in KNOWN]
    for name, j, mod, later in bad: print(f"{name} (code cell {j}) imports deit_scratch.{mod}, which {later} builds later in the course")
    gone = KNOWN - {(v[0], v[2]) for v in found}
    for name, mod in sorted(gone): print(f"{name} no longer imports deit_scratch.{mod}: remove it from KNOWN in tools/check_order.py")
    if not (bad or gone): print(f"check_order: {len(found) - len(bad)} known forward reference(s) left (issue 11), none new")
    sys.exit(1 if bad or gone else 0)
