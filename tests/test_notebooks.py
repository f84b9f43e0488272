"""The committed notebooks themselves: what a reader of the site sees must come from a clean run, without noise."""
import json
from pathlib import Path
import pytest

NBS = sorted((Path(__file__).resolve().parents[1]/"nbs").glob("*.ipynb"))

@pytest.mark.parametrize("path", NBS, ids=[p.name for p in NBS])
def test_no_stderr_in_committed_outputs(path):
    "Warnings, progress bars and log lines belong in a terminal: a notebook shows them on stdout, checked, or not at all"
    cells = json.loads(path.read_text())["cells"]
    bad = [(i, "".join(o["text"])[:120]) for i, c in enumerate(cells) for o in c.get("outputs", [])
           if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not bad, f"{path.name}: stderr output in cell(s) {bad}"

def test_prose_does_not_link_private_names():
    "nbdev turns a `name` in markdown into a link to its doc entry; private functions (`_x`) get none, so the site check fails"
    import re
    from deit_scratch._modidx import d
    private = {k[len(mod) + 1:] for mod, syms in d["syms"].items() for k in syms}        # module-level names ('Class.m' for methods,
    private = {n for n in private if n.startswith("_") and not n.startswith("__") and "." not in n}   # which @patch documents)
    bad = [(p.name, m) for p in NBS for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "markdown"
           for m in re.findall(r"`(_\w+)`", "".join(c["source"])) if m in private]
    assert not bad, f"write these as <code>name</code> in prose (or make them public): {bad}"

def core_path() -> list:
    "The notebooks of the sidebar's 'Core path' sections, in reading order"
    import yaml
    sections = yaml.safe_load((NBS[0].parent/"sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    return [n for s in sections if isinstance(s, dict) and s["section"].startswith("Core path") for n in s["contents"]]

CORE = core_path()

def test_core_path_is_first_and_whole():
    "The sidebar opens with the core path (after the landing page); deep dives and the appendix follow it"
    import re
    order = re.findall(r"([\w.-]+\.ipynb)", (NBS[0].parent/"sidebar.yml").read_text())
    assert order[0] == "index.ipynb" and order[1:len(CORE) + 1] == CORE, order
    assert len(CORE) >= 10 and "14_distillation.ipynb" in CORE

@pytest.mark.parametrize("name", CORE)
def test_core_notebook_density_and_exercises(name):
    "Core-path rhythm (issue 21): code cells of at most 40 lines, prose cells of at most 250 words, >= 2 exercises with folded solutions"
    cells = json.loads((NBS[0].parent/name).read_text())["cells"]
    src = ["".join(c["source"]) for c in cells]
    long = [(i, s.count("\n") + 1) for i, (c, s) in enumerate(zip(cells, src)) if c["cell_type"] == "code" and s.count("\n") + 1 > 40]
    wordy = [(i, len(s.split())) for i, (c, s) in enumerate(zip(cells, src)) if c["cell_type"] == "markdown" and len(s.split()) > 250]
    assert not long, f"{name}: code cells over 40 lines {long}"
    assert not wordy, f"{name}: markdown cells over 250 words {wordy}"
    start = next((i for i, s in enumerate(src) if s.startswith("## Exercises")), None)
    assert start is not None, f"{name}: no '## Exercises' section"
    solutions = [s for c, s in zip(cells[start:], src[start:]) if c["cell_type"] == "code" and "#| code-fold: true" in s]
    assert len(solutions) >= 2, f"{name}: {len(solutions)} folded solution(s) after '## Exercises'"
    assert all(any(t in s for t in ("test_", "assert")) for s in solutions), f"{name}: a solution that tests nothing"
