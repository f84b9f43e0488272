#!/usr/bin/env python
"""Execute notebooks top to bottom *in place*, so that their committed outputs come from one clean run.

    .venv/bin/python tools/run_nbs.py                 # every notebook in nbs/
    .venv/bin/python tools/run_nbs.py nbs/03_attention.ipynb --skip "gpu"

Cells whose first lines carry a skipped flag (`#| gpu` by default) are not run and keep their stored outputs
(refresh those on a GPU machine with `--skip ""`). Run `nbdev_clean` afterwards.
"""
import argparse, os, re, sys, time
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

def flags(cell) -> set:
    return {f for line in cell.source.splitlines() if re.match(r"\s*#\s*\|\s*\w", line)
              for f in re.sub(r"\s*#\s*\|", "", line).split()}

def collapse_cr(text:str) -> str:
    "What a terminal shows of text that overwrites itself with carriage returns (progress bars): each line's last non-blank state"
    out = []
    for line in text.split("\n"):
        parts = [p for p in line.split("\r") if p.strip()]
        out.append(parts[-1] if parts else "")
    return "\n".join(out)

def compact_streams(nb):
    "Replace progress-bar streams by their final state, so committed notebooks stay small"
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream" and "\r" in "".join(o["text"]):
                t = collapse_cr("".join(o["text"]))
                o["text"] = [l for l in t.splitlines(True) if l.strip()]

def run(path:Path, skip:set) -> float:
    nb = read_nb(path)
    for c in nb.cells:             # execnb leaves a cell's old outputs in place when its new run prints nothing
        if c.cell_type == "code" and not (flags(c) & skip): c.outputs, c.execution_count = [], None
    t0 = time.perf_counter()
    cwd = os.getcwd(); os.chdir(path.parent)
    try:
        sh = CaptureShell()
        def preproc(cell): return bool(flags(cell) & skip)
        sh.run_all(nb, exc_stop=True, preproc=preproc)
    finally: os.chdir(cwd)
    compact_streams(nb)
    write_nb(nb, path)
    return time.perf_counter() - t0

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--skip", default="gpu", help="space-separated cell flags not to run (default: gpu)")
    a = ap.parse_args()
    nbs = a.notebooks or sorted(p for p in Path("nbs").glob("*.ipynb") if not p.name.startswith("_"))
    for p in nbs:
        print(f"{p}: ", end="", flush=True)
        print(f"{run(p, set(a.skip.split())):.1f}s", flush=True)
