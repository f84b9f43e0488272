#!/usr/bin/env python
"""The course's order, checked (issue 11). Two rules, in the sidebar's reading order:

1. No forward references: a notebook may only import modules that notebooks before it export.
2. Nothing exported is replaced later: a `@patch` may *add* a method to a class (as it is explained), never
   redefine one that an exported cell already defined (then the version a notebook teaches and tests would not be
   the one users run).

Prints each violation and exits 1 if there is any.

    .venv/bin/python tools/check_order.py
"""
import ast, json, re, sys
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

EXPORT = re.compile(r"^#\|\s*exports?\b", re.M)

def _patched_class(f:ast.FunctionDef) -> str|None:
    "The class a fastcore `@patch` function is added to (its first argument's annotation), else None"
    is_patch = any((isinstance(d, ast.Name) and d.id == "patch") or (isinstance(d, ast.Call) and getattr(d.func, "id", None) == "patch")
                   for d in f.decorator_list)
    ann = f.args.args[0].annotation if is_patch and f.args.args else None
    return ann.id if isinstance(ann, ast.Name) else None

def replacements() -> list:
    "(notebook, cell, 'Class.method', the notebook that defined it first) for every exported redefinition"
    first, out = {}, []
    for name in reading_order():
        for j, src in enumerate(cells(NBS/name)):
            if not EXPORT.search(src): continue
            try: tree = ast.parse("\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!"))))
            except SyntaxError: continue
            defs = []
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    defs += [f"{node.name}.{f.name}" for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
                elif isinstance(node, ast.FunctionDef) and (cls := _patched_class(node)): defs.append(f"{cls}.{node.name}")
            for d in defs:
                if d in first and first[d][0] != (name, j): out.append((name, j, d, first[d][0][0]))
                first.setdefault(d, ((name, j),))
    return out

# Known forward references still to restructure (issue 11). The check fails on any other one, and on an entry here
# that no longer happens (remove it then), so the list can only shrink.
KNOWN = set()

if __name__ == "__main__":
    found = violations()
    bad = [v for v in found if (v[0], v[2]) not in KNOWN]
    for name, j, mod, later in bad: print(f"{name} (code cell {j}) imports deit_scratch.{mod}, which {later} builds later in the course")
    gone = KNOWN - {(v[0], v[2]) for v in found}
    for name, mod in sorted(gone): print(f"{name} no longer imports deit_scratch.{mod}: remove it from KNOWN in tools/check_order.py")
    replaced = replacements()
    for name, j, d, earlier in replaced: print(f"{name} (code cell {j}) redefines {d}, which {earlier} exported: extend it, do not replace it")
    if not (bad or gone or replaced):
        print(f"check_order: no forward imports ({len(found) - len(bad)} known), no exported method replaced by a later @patch")
    sys.exit(1 if bad or gone or replaced else 0)
