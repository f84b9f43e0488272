"""tools/check_order.py on a made-up course: each of its rules must catch what it is there for."""
import importlib.util, json
from pathlib import Path
import pytest

spec = importlib.util.spec_from_file_location("check_order", Path(__file__).resolve().parents[1]/"tools"/"check_order.py")
check_order = importlib.util.module_from_spec(spec); spec.loader.exec_module(check_order)

def notebook(path:Path, *sources:str):
    cells = [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": s} for s in sources]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))

@pytest.fixture
def course(tmp_path, monkeypatch):
    "Three notebooks: 00_a, 01_b (imports a, and c's module), 02_c (a tool candidate, importing nothing)"
    notebook(tmp_path/"00_a.ipynb", "#| default_exp a", "#| export\nX = 1")
    notebook(tmp_path/"01_b.ipynb", "#| default_exp b", "#| export\nfrom deit_scratch.a import X", "from deit_scratch.c import Y")
    notebook(tmp_path/"02_c.ipynb", "#| default_exp c", "#| export\nY = 2")
    monkeypatch.setattr(check_order, "NBS", tmp_path)
    monkeypatch.setattr(check_order, "TOOLS", set())
    return tmp_path

def sidebar(d:Path, *names:str):
    (d/"sidebar.yml").write_text("website:\n  sidebar:\n    contents:\n      - index.ipynb\n" + "".join(f"      - {n}\n" for n in names))

def test_forward_import_is_caught(course):
    sidebar(course, "00_a.ipynb", "01_b.ipynb", "02_c.ipynb")
    assert check_order.violations() == [("01_b.ipynb", 2, "c", "02_c.ipynb")]
    assert check_order.misnumbered() == []

def test_a_tool_may_be_used_early_but_must_be_a_leaf(course, monkeypatch):
    sidebar(course, "00_a.ipynb", "01_b.ipynb", "02_c.ipynb")
    monkeypatch.setattr(check_order, "TOOLS", {"c"})
    assert check_order.violations() == [] and check_order.tool_imports() == []
    notebook(course/"02_c.ipynb", "#| default_exp c", "#| export\nfrom deit_scratch.b import X\nY = 2")    # the tool reaches into the course
    assert check_order.tool_imports() == [("02_c.ipynb", 1, "b")]

def test_numbers_must_follow_the_sidebar(course):
    sidebar(course, "00_a.ipynb", "02_c.ipynb", "01_b.ipynb")
    assert check_order.misnumbered() == [("01_b.ipynb", "02_c.ipynb")]

def test_the_real_course_passes():
    assert check_order.violations() == [] and check_order.tool_imports() == [] and check_order.misnumbered() == []
    assert check_order.replacements() == []
