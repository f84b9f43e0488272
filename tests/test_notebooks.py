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
