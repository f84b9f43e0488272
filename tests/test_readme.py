"""The README is executed: every code block of README.md (Python and shell) runs, in a scratch folder, with the
substitutions below for what a test cannot have. A block that cannot run carries, just before it in the README
source (nbs/index.ipynb), `<!-- readme-test: not run: REASON -->`; the test fails on a block that neither ran nor
is marked. README.md is generated from nbs/index.ipynb (test_packaging.py checks it is up to date), so these are
also the code blocks of index.ipynb (whose code cells nbdev_test runs as well).

What the README names and a test cannot have, and what stands in for it (applied to every block, in this order):

| README | in the test | why |
|---|---|---|
| a hub id (`facebook/deit-*-patch16-224`) | a tiny distilled checkpoint made here (transformers directory with a processor) | offline |
| `deit_small_distilled_patch16_224-649709d9.pth`, `deit_small.pth` | the same tiny model as a facebookresearch `.pth` | offline, small |
| `--config deit_small_distilled_patch16_224` | `--config` the tiny model's config.json | the tiny `.pth` is not DeiT-S |
| `photos/`, `/shared/photos/`, `photos/cat/01.jpg`, `photo.jpg` | a generated class folder (cat, dog, emu) and a real photo | no user data |
| `runs/teacher/model` | a teacher trained first by `deit-scratch train` on that folder | the README assumes one |
| `--epochs N`, `--batch-size N`, `--image-size N`; `n=10000`, 10 epochs | 1 epoch, batch 8, 32 px; 300 images, 1 epoch | minutes, not hours |
| `... --resume` | the command above it, plus `--resume` | the README abbreviates |
| `torchrun --nproc_per_node=4`; `--nnodes=2 ... --rdzv-*` | `--standalone --nproc_per_node=2` | one 2-core machine |
| `pip install onnx onnxscript onnxruntime` | a check that they are installed (dev dependencies) | no installs in tests |
"""
import json, os, re, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch
from PIL import Image
from deit_test_utils import run_torchrun

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MARK = re.compile(r"<!--\s*readme-test:\s*not run:\s*(?P<why>[^>]*\S)\s*-->\s*$")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("torchrun")]   # trains, and runs torchrun

def readme_blocks(text:str) -> list:
    "`(language, code, reason it is not run or None)` for each fenced block with a language (plain ``` blocks are outputs)"
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if not m[1]: continue
        before = text[:m.start()].rstrip().splitlines()
        why = MARK.match(before[-1]) if before else None
        out.append((m[1], m[2], why["why"] if why else None))
    return out

def commands(block:str) -> list:
    "The shell commands of a block: continuation lines joined, comments and blank lines dropped"
    joined = re.sub(r"\\\n\s*", " ", block)
    return [l.split("  #")[0].strip() for l in joined.splitlines() if l.strip() and not l.lstrip().startswith("#")]

@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    "A scratch folder with what the README assumes: a photo, a class folder, a checkpoint, a .pth, a teacher run"
    from deit_scratch import DeiTConfig, DeiTForImageClassificationWithTeacher, DeiTImageProcessor
    from deit_scratch.pretrained import hf_to_fb
    d = tmp_path_factory.mktemp("readme")
    shutil.copy(ROOT/"tests"/"images"/"chelsea.png", d/"photo.png")
    Image.open(d/"photo.png").convert("RGB").save(d/"photo.jpg")
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(("cat", "dog", "emu")):
        (d/"photos"/name).mkdir(parents=True)
        for k in range(8):
            x = (torch.rand(40, 40, 3, generator=g) * 120).to(torch.uint8); x[..., c] += 120
            Image.fromarray(x.numpy()).save(d/"photos"/name/f"{k:02d}.jpg")
    torch.manual_seed(0)
    cfg = DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8,
                     num_labels=10, layer_norm_eps=1e-6)
    m = DeiTForImageClassificationWithTeacher(cfg).eval()
    m.save_pretrained(d/"tiny", image_processor=DeiTImageProcessor(size=36, crop_size=32))
    torch.save({"model": hf_to_fb(m.hf_state_dict())}, d/"tiny.pth")
    (d/"tiny_config.json").write_text(m.config.to_json_string())
    r = run_shell(d, f"deit-scratch train photos/ --output runs/teacher --epochs 1 --batch-size 8 --image-size 32 --no-progress")
    assert r.returncode == 0, r.stderr
    return d

def substitute(code:str, d:Path) -> str:
    "The README's code with the test's stand-ins (see the module's docstring)"
    subs = [
        (r"facebook/deit-[\w-]+-patch16-224", str(d/"tiny")),
        (r"deit_small_distilled_patch16_224-649709d9\.pth|deit_small\.pth", str(d/"tiny.pth")),
        (r"--config deit_small_distilled_patch16_224", f"--config {d/'tiny_config.json'}"),
        (r"/shared/photos/", "photos/"), (r"/shared/runs/", "runs/"),
        (r"photos/cat/01\.jpg", "photos/cat/01.jpg"),
        (r"--epochs \d+", "--epochs 1"), (r"--batch-size \d+", "--batch-size 8"), (r"--image-size \d+", "--image-size 32"),
        (r"deit-scratch train fashion-mnist (.*)", r"deit-scratch train fashion-mnist \1 --limit 300"),
        (r"n=10000", "n=300"), (r"epochs=10", "epochs=1"), (r'fashion_mnist\("test", transform=eval_transform\(\)\)', 'fashion_mnist("test", transform=eval_transform(), n=300)'),
        (r"\*\*TEACHER_RECIPE", '**{**TEACHER_RECIPE, "epochs": 1}'),
        (r"--nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=\S+ --rdzv-id=\S+", "--standalone --nproc_per_node=2"),
        (r"--nproc_per_node=4", "--nproc_per_node=2"),
        (r"^pip install onnx onnxscript onnxruntime.*$", 'python -c "import onnx, onnxscript, onnxruntime"'),
    ]
    for pat, rep in subs: code = re.sub(pat, rep, code, flags=re.M)
    return code

def run_shell(d:Path, command:str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("DEIT_SCRATCH_DEBUG", None)
    return subprocess.run(["bash", "-c", command], cwd=d, env=env, capture_output=True, text=True, timeout=600)

def shell_block(code:str, d:Path):
    "Each command in turn; `... --resume` repeats the train command before it with --resume"
    last_train = None
    for cmd in commands(substitute(code, d)):
        if " ... --resume" in cmd:
            assert last_train is not None, cmd
            cmd = last_train + " --resume"
        elif "deit-scratch train" in cmd: last_train = cmd
        if "torchrun" in cmd:                                  # the README's alternatives to the run above: their own folders
            cmd = cmd.replace("torchrun ", f"{sys.executable} -m torch.distributed.run ", 1)
            cmd = re.sub(r"--output (\S+)", lambda m: f"--output {m[1]}-torchrun-{len(cmd) % 97}", cmd)
            out = d/re.search(r"--output (\S+)", cmd)[1]
            r = run_torchrun(lambda: run_shell(d, cmd), before_retry=lambda: shutil.rmtree(out, ignore_errors=True))
        else: r = run_shell(d, cmd)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"

def python_block(code:str, d:Path, namespace:dict):
    cwd = os.getcwd(); os.chdir(d)
    try: exec(compile(substitute(code, d), "<README>", "exec"), namespace)
    finally: os.chdir(cwd)

def test_readme_marks_explain_themselves():
    "a block marked as not run says why; the marks are few (each is a promise the README cannot keep in a test)"
    blocks = readme_blocks((ROOT/"README.md").read_text())
    marked = [b for b in blocks if b[2] is not None]
    assert all(len(why) > 20 for _, _, why in marked), marked
    assert len(marked) <= 1, [why for _, _, why in marked]

def test_every_readme_block_runs(scratch):
    "every block of README.md runs with the substitutions, or is marked; in order (later blocks use what earlier ones made)"
    blocks = readme_blocks((ROOT/"README.md").read_text())
    assert len(blocks) >= 8, len(blocks)
    ran, namespace = [], {"__name__": "__readme__"}
    for lang, code, why in blocks:
        if why is not None: continue
        if lang == "python": python_block(code, scratch, namespace)
        elif lang in ("sh", "bash", "shell"): shell_block(code, scratch)
        else: pytest.fail(f"a {lang!r} block: neither Python nor shell, and not marked")
        ran.append(code)
    assert len(ran) == len([b for b in blocks if b[2] is None])
    # what the blocks claim, checked: the student run is a model, and the served ONNX file predicts
    assert (scratch/"runs"/"photos"/"model"/"config.json").is_file() and (scratch/"served"/"model.onnx").is_file()
    cfg = json.loads((scratch/"runs"/"photos"/"model"/"config.json").read_text())
    assert cfg["label2id"] == {v: int(k) for k, v in cfg["id2label"].items()} and set(cfg["id2label"].values()) == {"cat", "dog", "emu"}
