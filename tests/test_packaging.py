"""nbdev/Quarto layout, settings, and the wheel: only the library, with the runtime requirements only."""
import ast, configparser, json, os, re, shutil, subprocess, sys, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/"nbs"
PUBLIC = ("DeiTConfig", "DeiTModel", "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher", "DeiTForMaskedImageModeling",
          "DistillationLoss", "Teacher", "train", "Trainer", "TrainConfig", "load_fashion_mnist", "fashion_mnist", "ImageFolder", "ConvNet",
          "DeiTImageProcessor", "DeiTImageProcessorFast", "DeiTFeatureExtractor")
RUNTIME = {"torch", "numpy", "pillow", "safetensors", "fastcore", "tqdm"}

def settings():
    cp = configparser.ConfigParser(delimiters=["="], interpolation=None)
    cp.read(ROOT/"settings.ini", encoding="utf-8")
    return cp["DEFAULT"]

def test_quarto_symlink():
    link = NBS/"_quarto.yml"
    assert link.is_symlink(), "nbs/_quarto.yml must be a symlink"
    assert os.readlink(link) == "../_quarto.yml"
    assert link.resolve() == (ROOT/"_quarto.yml").resolve() and link.resolve().is_file()

def test_tst_flags():
    flags = settings()["tst_flags"]
    assert "|" not in flags, f"tst_flags must be space separated (nbdev 2), got {flags!r}"
    assert {"notest", "slow", "gpu"} <= set(flags.split()), flags

def _default_exp(nb:Path):
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    for c in cells:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        m = re.search(r"^#\|\s*default_exp\s+(\S+)", src, re.M)
        if c["cell_type"] == "code" and m: return m.group(1)

# Notebooks that build no module of their own, and why. Every other numbered notebook exports one.
NO_MODULE = {"15_pos_interpolation.ipynb": "a deep dive: it rebuilds by hand the resize that notebook 02's interpolate_pos_embed calls"}

def test_numbered_notebooks_export_and_are_in_sidebar():
    sidebar = (NBS/"sidebar.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"[\w./-]+\.ipynb", sidebar))
    nbs = sorted(NBS.glob("[0-9][0-9]*_*.ipynb"))
    no_export = [nb.name for nb in nbs if not _default_exp(nb) and nb.name not in NO_MODULE]
    stale = [n for n in NO_MODULE if not (NBS/n).exists() or _default_exp(NBS/n)]
    assert not stale, f"NO_MODULE lists notebooks that are gone or now export a module: {stale}"
    not_listed = [nb.name for nb in nbs if nb.name not in listed]
    assert not no_export, f"notebooks without a `#| default_exp` cell: {no_export}"
    assert not not_listed, f"notebooks missing from nbs/sidebar.yml: {not_listed}"

def test_public_api():
    import deit_scratch
    missing = [n for n in PUBLIC if not hasattr(deit_scratch, n)]
    assert not missing, f"deit_scratch lacks {missing}"

def test_setup_py_has_no_pkg_resources():
    tree = ast.parse((ROOT/"setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): assert all(a.name.split(".")[0] != "pkg_resources" for a in node.names)
        if isinstance(node, ast.ImportFrom): assert (node.module or "").split(".")[0] != "pkg_resources"
        if isinstance(node, ast.Name): assert node.id != "pkg_resources"

def _requirement_name(req:str) -> str:
    return re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")

@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    "Build the wheel from a copy of the repository root (an in-tree build would write build/ and egg-info into the checkout)"
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp/"src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "_docs", "_proc", ".ipynb_checkpoints"))
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--disable-pip-version-check", "-q", "-w", str(tmp/"out"), "."],
                           cwd=src, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired: pytest.fail("pip wheel took more than 300 s")
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = list((tmp/"out").glob("deit_scratch-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]

@pytest.mark.slow
@pytest.mark.xdist_group("wheel")
def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    lib = {Path(n).name for n in names if n.startswith("deit_scratch/")}
    expected = {p.name for p in (ROOT/"deit_scratch").glob("*.py")} | {p.name for p in (ROOT/"deit_scratch").glob("*.json")}
    assert "imagenet_classes.json" in expected
    assert expected <= lib, f"missing from the wheel: {sorted(expected - lib)}"
    bad = [n for n in names if n.startswith(("tests/", "nbs/")) or n.endswith(".ipynb") or "/tests/" in n]
    assert not bad, f"the wheel should only hold the library: {bad}"
    tops = {n.split("/")[0] for n in names}
    assert all(t == "deit_scratch" or t.endswith(".dist-info") for t in tops), tops

@pytest.mark.slow
@pytest.mark.xdist_group("wheel")
def test_wheel_requirements(wheel):
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    reqs = [l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("Requires-Dist:")]
    is_extra = lambda r: re.search(r";.*\bextra\s*==", r) is not None
    runtime = {_requirement_name(r) for r in reqs if not is_extra(r)}
    assert runtime == RUNTIME, f"runtime requirements: {sorted(runtime)}"
    extras = {_requirement_name(r) for r in reqs if is_extra(r)}
    assert "transformers" in extras and "transformers" not in runtime
    hub = [r for r in reqs if _requirement_name(r) in ("huggingface_hub", "huggingface-hub")]
    assert any(re.search(r"extra\s*==\s*['\"]hub['\"]", r) for r in hub), hub          # pip install deit-scratch[hub]
    torch_req = next(r for r in reqs if _requirement_name(r) == "torch")
    assert ">=2.5" in torch_req, torch_req                                                 # torch.export.Dim (notebook 22)

@pytest.mark.slow
@pytest.mark.xdist_group("wheel")
def test_console_script_declared(wheel):
    with zipfile.ZipFile(wheel) as z:
        eps = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "deit-scratch = deit_scratch.cli:main" in eps, eps

def test_readme_generated_from_index():
    r = subprocess.run([sys.executable, str(ROOT/"tools"/"make_readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
