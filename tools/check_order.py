#!/usr/bin/env python
"""The course's order, checked (issues 11 and 21). Three rules, in the sidebar's reading order:

1. No forward references: a notebook may only import modules that notebooks before it export, or one of the
   `TOOLS`: the appendix's leaf modules (safe file I/O, the course's test helpers), which the core path calls the way it
   calls a library. A tool module itself may import no other module of the course, so the layering stays acyclic
   and no tool can bring in anything the reader has not met.
2. Nothing exported is replaced later: a `@patch` may *add* a method to a class (as it is explained), never
   redefine one that an exported cell already defined (then the version a notebook teaches and tests would not be
   the one users run).
3. The numbers follow the reading order: the notebooks' numeric prefixes increase strictly down the sidebar.

Prints each violation and exits 1 if there is any.

    .venv/bin/python tools/check_order.py
"""
import ast, json, re, sys
from pathlib import Path

NBS = Path(__file__).resolve().parents[1] / "nbs"
IMPORT = re.compile(r"^\s*(?:from\s+(?:deit_scratch)?\.?([\w.]*)\s+import|import\s+deit_scratch\.([\w.]+))", re.M)

def reading_order() -> list:
    return [n for n in re.findall(r"([\w.-]+\.ipynb)", (NBS/"sidebar.yml").read_text()) if n != "index.ipynb"]

EXPORT = re.compile(r"^#\|\s*exports?\b", re.M)

def cells(nb:Path) -> list: return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]

def module_of(nb:Path) -> str|None:
    m = next((re.search(r"^#\|\s*default_exp\s+(\S+)", s, re.M) for s in cells(nb) if "default_exp" in s), None)
    return m[1] if m else None

# Appendix modules every notebook may import (rule 1): leaves, checked by `tool_imports`.
TOOLS = {"files", "helpers"}

def imports(name:str, exported_only:bool=False) -> list:
    "[(code cell, module)] for every import of a deit_scratch module in notebook `name`"
    out = []
    for j, src in enumerate(cells(NBS/name)):
        if exported_only and not EXPORT.search(src): continue
        for m in IMPORT.finditer(src):
            line = src[m.start():src.find("\n", m.start()) if "\n" in src[m.start():] else None]
            if "deit_scratch" not in line and not line.lstrip().startswith("from ."): continue
            out.append((j, (m[1] or m[2] or "").split(".")[0]))
    return out

def violations() -> list:
    order = reading_order()
    owner = {module_of(NBS/n): i for i, n in enumerate(order)}
    return [(name, j, mod, order[owner[mod]]) for i, name in enumerate(order) for j, mod in imports(name)
            if mod in owner and owner[mod] > i and mod not in TOOLS]

def tool_imports() -> list:
    "(notebook, cell, module) for every course module a tool module's exported code imports (there must be none)"
    by_module = {module_of(NBS/n): n for n in reading_order()}
    return [(by_module[t], j, mod) for t in sorted(TOOLS) for j, mod in imports(by_module[t], exported_only=True)
            if mod and mod != t and mod in by_module]

def misnumbered() -> list:
    "(notebook, the notebook before it) wherever the numeric prefix does not increase down the sidebar"
    order = reading_order()
    num = lambda n: int(re.match(r"(\d+)", n)[1]) if re.match(r"\d+", n) else None
    return [(b, a) for a, b in zip(order, order[1:]) if num(a) is None or num(b) is None or num(b) <= num(a)]

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
    leaky = tool_imports()
    for name, j, mod in leaky: print(f"{name} (code cell {j}) is a tool module but imports deit_scratch.{mod}: tools import no course module")
    order = misnumbered()
    for name, before in order: print(f"{name} comes after {before} in nbs/sidebar.yml: the numbers must follow the reading order")
    if not (bad or gone or replaced or leaky or order):
        names = reading_order(); owner = {module_of(NBS/n): i for i, n in enumerate(names)}
        early = {n for i, n in enumerate(names) for _, mod in imports(n) if mod in TOOLS and owner[mod] > i}
        print(f"check_order: {len(names)} notebooks numbered in reading order; no forward imports ({len(found) - len(bad)} known) "
              f"but of the tools ({', '.join(sorted(TOOLS))}, leaves, used ahead of their appendix by {len(early)} notebooks); "
              "no exported method replaced by a later @patch")
    sys.exit(1 if bad or gone or replaced or leaky or order else 0)
