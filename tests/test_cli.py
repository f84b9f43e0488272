"""The `deit-scratch` command line: the installed console script and `python -m deit_scratch.cli` run in subprocesses
(predict on the real photos in tests/images and on images written here, --json against the library's `predict`,
convert round trips loaded back by transformers 5.23), and every error case with its exit code and one-line message
(in-process through `main`, which the script calls, plus a few through the script itself).
Checkpoints are tiny and random: the numbers are meaningless, the plumbing is what is tested."""
import importlib.metadata, json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from deit_scratch.cli import main
from deit_scratch.config import DeiTConfig, imagenet_id2label
from deit_scratch.encoder import DeiTModel
from deit_scratch.heads import DeiTForImageClassification, DeiTForImageClassificationWithTeacher
from deit_scratch.inference import predict
from deit_scratch.image_processor import DeiTImageProcessor
from deit_scratch.preprocessing import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from deit_scratch.pretrained import load_model, hf_to_fb

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "deit-scratch"
# one thread in the subprocesses too (conftest sets it in-process): the same kernels, so the same bits
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
ENV.pop("DEIT_SCRATCH_DEBUG", None)


def tiny_config(**kw):
    return DeiTConfig(**{**dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                image_size=32, patch_size=8, encoder_stride=8), **kw})

def hub_style_processor():
    return DeiTImageProcessor(size=36, crop_size=32, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD)

def script(*args, timeout=120):
    "Run the installed console script"
    if not SCRIPT.exists(): pytest.skip(f"the console script is not installed at {SCRIPT}: pip install -e . first")
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)

def module(*args, timeout=120):
    "Run `python -m deit_scratch.cli`"
    return subprocess.run([sys.executable, "-m", "deit_scratch.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=ROOT)

def cli(capsys, *args):
    "Run `main` in-process: (exit code, stdout, stderr)"
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err

def as_tuples(results): return [[tuple(p) for p in r] for r in results]
def json_tuples(doc): return [[(p["label_id"], p["label"], p["prob"]) for p in r["predictions"]] for r in doc["results"]]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory): return tmp_path_factory.mktemp("cli")

@pytest.fixture(scope="module")
def ckpt(work):
    "A distilled checkpoint directory with 1000 placeholder-named classes and a hub-style preprocessor_config.json"
    torch.manual_seed(0)
    cfg = tiny_config(); cfg.num_labels = 1000                       # LABEL_0 ... LABEL_999: ImageNet names are used
    d = work / "distilled"
    DeiTForImageClassificationWithTeacher(cfg).save_pretrained(d)
    hub_style_processor().save_pretrained(d)
    return d

@pytest.fixture(scope="module")
def named_ckpt(work):
    "A CLS-only classifier with 3 named classes and no preprocessor_config.json"
    torch.manual_seed(1)
    d = work / "named"
    DeiTForImageClassification(tiny_config(id2label={0: "cat", 1: "dog", 2: "ship"})).save_pretrained(d)
    return d

@pytest.fixture(scope="module")
def fb_pth(work, ckpt):
    "The distilled checkpoint in facebookresearch/deit's format: {'model': state dict} with fused qkv, head/head_dist"
    sd = load_model(ckpt).hf_state_dict()
    p = work / "deit_tiny_random.pth"
    torch.save({"model": hf_to_fb(sd), "epoch": 299}, p)
    cfg = tiny_config(); cfg.num_labels = 1000
    cfg.save_pretrained(work / "fb_config")                          # the head count a .pth cannot tell
    return p

@pytest.fixture(scope="module")
def images(work):
    "Images written here: RGB PNG, greyscale JPEG, RGBA PNG (transparency), a 5x7 thumbnail, an EXIF-rotated JPEG"
    rng = np.random.default_rng(0)
    d = work / "images"; d.mkdir()
    paths = []
    def save(name, im, **kw): p = d / name; im.save(p, **kw); paths.append(p)
    save("rgb.png", Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)))
    save("grey.jpg", Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8)), quality=90)
    save("rgba.png", Image.fromarray(rng.integers(0, 256, (33, 33, 4), dtype=np.uint8), "RGBA"))
    save("thumb.png", Image.fromarray(rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)))
    exif = Image.Exif(); exif[0x0112] = 6                            # orientation: rotate 90 degrees on display
    save("rotated.jpg", Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)), exif=exif)
    return paths

@pytest.fixture(scope="module")
def bad_files(work, ckpt):
    "Files that are not what they claim to be"
    d = work / "bad"; d.mkdir()
    (d / "notes.txt").write_text("not a photo")
    (d / "empty.jpg").write_bytes(b"")
    good = d / "good.jpg"; Image.new("RGB", (64, 64), (200, 30, 30)).save(good)
    (d / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    trunc_ckpt = d / "truncated-ckpt"; trunc_ckpt.mkdir()
    (trunc_ckpt / "config.json").write_text((ckpt / "config.json").read_text())
    (trunc_ckpt / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:2000])
    bad_json = d / "bad-json"; bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    (bad_json / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes())
    no_weights = d / "no-weights"; no_weights.mkdir(); (no_weights / "config.json").write_text((ckpt / "config.json").read_text())
    save_file({"backbone.conv1.weight": torch.zeros(8, 3, 3, 3)}, str(d / "resnet.safetensors"))
    torch.save({"optimizer": {"lr": 0.1}}, d / "not-a-model.pth")
    bare = d / "bare"; DeiTModel(tiny_config()).save_pretrained(bare)
    wrong = d / "wrong-size"; DeiTForImageClassificationWithTeacher(tiny_config(hidden_size=48, num_labels=4)).save_pretrained(wrong)
    (wrong / "config.json").write_text((ckpt / "config.json").read_text())   # a config.json that does not match the weights
    bad_proc = d / "bad-proc"; bad_proc.mkdir()
    for f in ("config.json", "model.safetensors"): (bad_proc / f).write_bytes((ckpt / f).read_bytes())
    (bad_proc / "preprocessor_config.json").write_text("[1, 2]")
    return d


# ---------------------------------------------------------------- the installed script and python -m
def test_console_script_is_declared():
    eps = importlib.metadata.entry_points(group="console_scripts", name="deit-scratch")
    assert [e.value for e in eps] == ["deit_scratch.cli:main"], list(eps)
    assert "console_scripts = deit-scratch=deit_scratch.cli:main" in (ROOT / "settings.ini").read_text()

@pytest.mark.slow
def test_one_cli_everywhere():
    "deit-scratch, python -m deit_scratch.cli and python -m deit_scratch.launch (torchrun's) list the same four commands"
    import re
    outs = [subprocess.run(cmd + ["--help"], capture_output=True, text=True, env=ENV, timeout=120)
            for cmd in ([str(SCRIPT)], [sys.executable, "-m", "deit_scratch.cli"], [sys.executable, "-m", "deit_scratch.launch"])]
    assert all(o.returncode == 0 for o in outs), [o.stderr for o in outs]
    listed = [re.findall(r"^    (\w+)\s", o.stdout, re.M) for o in outs]
    assert listed[0] == listed[1] == listed[2] == ["predict", "convert", "train", "export"], listed
    assert "train students" in outs[0].stdout and outs[0].stdout == outs[1].stdout

def test_predict_imports_neither_training_launch_nor_onnx():
    "the command table is lazy: --help and predict's parser import no command module they do not need"
    code = ("import sys; from deit_scratch.cli import main; main(['--help'])\n"
            "print(sorted(m for m in sys.modules if m in ('deit_scratch.launch', 'deit_scratch.export', 'onnx', 'onnxruntime')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout

def test_script_predict_json_matches_library(ckpt, images, photo_paths):
    "Real photos and written images through the installed script: --json parses and equals predict() exactly"
    paths = [*photo_paths, *images]
    r = script("predict", *paths, "--model", ckpt, "--top-k", 7, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["model_class"] == "DeiTForImageClassificationWithTeacher"
    assert doc["preprocessing"] == f"preprocessor_config.json from {ckpt}"
    assert [d["image"] for d in doc["results"]] == [str(p) for p in paths]
    ref = predict(load_model(ckpt), DeiTImageProcessor.from_pretrained(ckpt), paths, top_k=7)
    assert json_tuples(doc) == as_tuples(ref)                        # exact: ids, names and float bits
    names = imagenet_id2label()
    for res in doc["results"]:
        preds = res["predictions"]
        assert len(preds) == 7
        probs = [p["prob"] for p in preds]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
        assert all(p["label"] == names[p["label_id"]] for p in preds)   # placeholder names -> ImageNet names

@pytest.mark.slow
def test_module_predict_text(ckpt, photo_paths):
    "`python -m deit_scratch.cli` on the real photos: text output, ranks in order, the preprocessing named"
    r = module("predict", *photo_paths, "-m", ckpt, "-k", 3)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"model: {ckpt} (DeiTForImageClassificationWithTeacher, 1000 classes)")
    assert lines[1] == f"preprocessing: preprocessor_config.json from {ckpt}"
    for p in photo_paths: assert str(p) in lines
    ranks = [l.split(".")[0].strip() for l in lines if l.startswith("   ")]
    assert ranks == ["1", "2", "3"] * len(photo_paths)
    probs = [float(l.split()[1].rstrip("%")) for l in lines if l.startswith("   ")]
    for i in range(0, len(probs), 3): assert probs[i:i+3] == sorted(probs[i:i+3], reverse=True)

@pytest.mark.slow
def test_script_convert_round_trip_in_transformers(work, fb_pth, ckpt):
    "facebookresearch .pth -> convert (script) -> transformers 5.23 loads it, logits within 1e-5 of ours"
    transformers = pytest.importorskip("transformers")
    dst = work / "converted-fb"
    r = script("convert", fb_pth, dst, "--config", work / "fb_config" / "config.json", "--processor", "facebook")
    assert r.returncode == 0, r.stderr
    assert f"wrote {dst}: config.json, model.safetensors, preprocessor_config.json" in r.stdout
    ours = load_model(dst)
    hf = transformers.DeiTForImageClassificationWithTeacher.from_pretrained(dst).eval()
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): a, b = ours(px).logits, hf(pixel_values=px).logits
    assert a.shape == b.shape == (2, 1000) and a.dtype == b.dtype == torch.float32
    assert (a - b).abs().max().item() < 1e-5
    src = load_model(fb_pth, config=DeiTConfig.from_pretrained(work / "fb_config"))   # the same weights, bit for bit
    for k, v in src.state_dict().items(): assert torch.equal(v, ours.state_dict()[k]), k
    assert DeiTImageProcessor.from_pretrained(dst) == DeiTImageProcessor.facebook_eval(32)

@pytest.mark.slow
def test_script_and_module_errors(work, images):
    "Through the real processes: one line on stderr, no traceback, the right exit codes"
    r = script("predict", work / "missing.jpg", "--model", work / "distilled")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"deit-scratch predict: error: image not found: {work / 'missing.jpg'}\n"
    r = module("predict", images[0], "--model", work / "distilled", "--top-k", "0")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.count("\n") == 1 and "must be a positive integer, got '0'" in r.stderr and "Traceback" not in r.stderr
    r = script("--help")
    assert r.returncode == 0 and "predict" in r.stdout and "convert" in r.stdout and "exit codes" in r.stdout


# ---------------------------------------------------------------- predict, in-process
def test_predict_named_classes_top_k_clamped(capsys, named_ckpt, images):
    code, out, err = cli(capsys, "predict", *images, "--model", named_ckpt, "--top-k", 10, "--json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["preprocessing"].startswith("default: DeiT eval (resize 36, crop 32, ImageNet mean/std)")
    ref = predict(load_model(named_ckpt), DeiTImageProcessor(size=36, crop_size=32, image_mean=IMAGENET_DEFAULT_MEAN,
                                                             image_std=IMAGENET_DEFAULT_STD), images, top_k=10)
    assert json_tuples(doc) == as_tuples(ref)
    for res in doc["results"]:
        assert sorted(p["label"] for p in res["predictions"]) == ["cat", "dog", "ship"]     # 3 classes: all of them
        assert abs(sum(p["prob"] for p in res["predictions"]) - 1) < 1e-6

def test_predict_batches_and_processor_choices(capsys, ckpt, images):
    one = json.loads(cli(capsys, "predict", *images, "-m", ckpt, "--json", "--batch-size", 2)[1])
    ref = predict(load_model(ckpt), DeiTImageProcessor.from_pretrained(ckpt), images, batch_size=2)
    assert json_tuples(one) == as_tuples(ref)
    code, out, _ = cli(capsys, "predict", images[0], "-m", ckpt, "--json", "--processor", "facebook")
    assert code == 0 and json.loads(out)["preprocessing"].startswith("facebookresearch eval")
    code, out, _ = cli(capsys, "predict", images[0], "-m", ckpt, "--json", "--processor", "default")
    assert code == 0 and json.loads(out)["preprocessing"].startswith("default: DeiT eval")

def test_predict_pth_with_config(capsys, work, fb_pth, ckpt, images):
    "A .pth has no config: --config supplies it; the predictions equal the source checkpoint's"
    code, out, err = cli(capsys, "predict", *images, "-m", fb_pth, "--config", work / "fb_config" / "config.json",
                         "--processor", ckpt, "--json")
    assert (code, err) == (0, "")
    ref = predict(load_model(ckpt), DeiTImageProcessor.from_pretrained(ckpt), images)
    got = json_tuples(json.loads(out))
    for g, r in zip(got, as_tuples(ref)):
        assert [p[:2] for p in g] == [p[:2] for p in r]
        assert max(abs(a[2] - b[2]) for a, b in zip(g, r)) < 1e-6

def test_convert_transformers_dir_and_force(capsys, work, ckpt, images):
    dst = work / "converted-dir"
    code, out, err = cli(capsys, "convert", ckpt, dst)
    assert (code, err) == (0, "")
    assert "preprocessing: preprocessor_config.json from" in out
    assert DeiTImageProcessor.from_pretrained(dst) == DeiTImageProcessor.from_pretrained(ckpt)
    proc = DeiTImageProcessor.from_pretrained(ckpt)
    assert predict(load_model(dst), proc, images) == predict(load_model(ckpt), proc, images)
    code, out, err = cli(capsys, "convert", ckpt, dst)
    assert (code, out) == (1, "") and "already holds a checkpoint: pass --force" in err
    assert cli(capsys, "convert", ckpt, dst, "--force")[0] == 0

def test_convert_without_preprocessing(capsys, work, named_ckpt):
    dst = work / "converted-named"
    code, out, err = cli(capsys, "convert", named_ckpt, dst)
    assert (code, err) == (0, "")
    assert "has no preprocessor_config.json; none written" in out
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors"]


# ---------------------------------------------------------------- every error, in-process
ERRORS = [  # (argv, with {work}/{bad}/{ckpt}/{img} placeholders), exit code, message fragment
    (["predict", "{work}/missing.jpg", "-m", "{ckpt}"], 1, "image not found: "),
    (["predict", "{bad}", "-m", "{ckpt}"], 1, "not a file: "),
    (["predict", "{bad}/notes.txt", "-m", "{ckpt}"], 1, "is not an image file PIL can read"),
    (["predict", "{bad}/empty.jpg", "-m", "{ckpt}"], 1, "is not an image file PIL can read"),
    (["predict", "{bad}/truncated.jpg", "-m", "{ckpt}"], 1, "truncated or corrupt"),
    (["predict", "{img}", "{bad}/notes.txt", "-m", "{ckpt}"], 1, "notes.txt' is not an image file"),
    (["predict", "{img}", "-m", "{work}/no-such-model"], 1, "model not found: "),
    (["predict", "{img}", "-m", "{bad}/notes.txt"], 1, "Could not read"),
    (["predict", "{img}", "-m", "{bad}/truncated-ckpt"], 1, "truncated or corrupt"),
    (["predict", "{img}", "-m", "{bad}/bad-json"], 1, "is not valid JSON"),
    (["predict", "{img}", "-m", "{bad}/no-weights"], 1, "No weights found"),
    (["predict", "{img}", "-m", "{bad}/resnet.safetensors"], 1, "does not look like a DeiT or ViT checkpoint"),
    (["predict", "{img}", "-m", "{bad}/not-a-model.pth"], 1, "without weights at the top level"),
    (["predict", "{img}", "-m", "{bad}/bare"], 1, "has no classification head"),
    (["predict", "{img}", "-m", "{bad}/wrong-size"], 1, "config.json and the weights disagree"),
    (["predict", "{img}", "-m", "{bad}/bad-proc"], 1, "does not hold a JSON object"),
    (["predict", "{img}", "-m", "{ckpt}", "--config", "deit_huge"], 1, "neither a config.json file nor a preset"),
    (["predict", "{img}", "-m", "{ckpt}", "--processor", "{work}/nowhere"], 1, "No preprocessor_config.json"),
    (["predict", "{img}", "-m", "{ckpt}", "--device", "nonsense"], 2, "argument --device: not a torch device: 'nonsense'"),
    (["predict", "{img}", "-m", "{ckpt}", "--top-k", "0"], 2, "argument -k/--top-k: must be a positive integer, got '0'"),
    (["predict", "{img}", "-m", "{ckpt}", "--top-k", "-3"], 2, "must be a positive integer, got '-3'"),
    (["predict", "{img}", "-m", "{ckpt}", "-k", "2.5"], 2, "must be a positive integer, got '2.5'"),
    (["predict", "{img}", "-m", "{ckpt}", "-k", "five"], 2, "must be a positive integer, got 'five'"),
    (["predict", "{img}", "-m", "{ckpt}", "--batch-size", "0"], 2, "argument --batch-size: must be a positive integer"),
    (["predict", "{img}"], 2, "the following arguments are required: -m/--model"),
    (["predict", "-m", "{ckpt}"], 2, "the following arguments are required: IMAGE"),
    (["predict", "{img}", "-m", "{ckpt}", "--colour"], 2, "unrecognized arguments: --colour"),
    (["classify", "{img}"], 2, "invalid choice: 'classify'"),
    ([], 2, "usage: deit-scratch"),
    (["convert", "{ckpt}"], 2, "the following arguments are required: DST"),
    (["convert", "{work}/nothing", "{work}/out"], 1, "model not found: "),
    (["convert", "{bad}/truncated-ckpt", "{work}/out"], 1, "truncated or corrupt"),
    (["convert", "{ckpt}", "{bad}/notes.txt"], 1, "is a file, expected a directory"),
    (["convert", "{ckpt}", "{ckpt}"], 1, "already holds a checkpoint: pass --force"),
]

@pytest.mark.parametrize("argv,want_code,want_msg", ERRORS, ids=[f"{i:02d}-{m[:40]}" for i, (_, _, m) in enumerate(ERRORS)])
def test_errors(capsys, work, ckpt, bad_files, images, argv, want_code, want_msg):
    argv = [a.format(work=work, bad=bad_files, ckpt=ckpt, img=images[0]) for a in argv]
    code, out, err = cli(capsys, *argv)
    assert code == want_code, (code, err)
    assert out == ""
    assert "Traceback" not in err
    if argv: assert len(err.splitlines()) == 1, err
    assert want_msg in err, err
    if argv and argv[0] in ("predict", "convert") and want_code == 1: assert err.startswith(f"deit-scratch {argv[0]}: error: ")

def test_help_and_version(capsys):
    code, out, err = cli(capsys, "predict", "--help")
    assert code == 0 and err == ""
    for s in ("--model PATH_OR_HUB_ID", "--top-k K", "--json", "--config PRESET_OR_JSON", "preprocessor_config.json",
              "ImageNet mean/std", "exit codes"):
        assert s in out, s
    code, out, _ = cli(capsys, "convert", "--help")
    assert code == 0 and "SRC" in out and "DST" in out and "--force" in out
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.startswith("deit-scratch ")

def test_debug_env_shows_traceback(monkeypatch, work, ckpt, images):
    monkeypatch.setenv("DEIT_SCRATCH_DEBUG", "1")
    with pytest.raises(ValueError, match="image not found"): main(["predict", str(work / "missing.jpg"), "-m", str(ckpt)])

def test_predict_grey_model_on_files(capsys):
    "A one-channel model (the committed course student) on PNG files: the CLI and `predict` give the same classes"
    root = Path(__file__).resolve().parents[1]/"models"
    files = sorted((root/"fashion-mnist-examples").glob("*.png"))[:4]
    assert main(["predict", *map(str, files), "--model", str(root/"fashion-mnist-deit-distilled"), "--top-k", "1", "--json"]) == 0
    got = [r["predictions"][0]["label"] for r in json.loads(capsys.readouterr().out)["results"]]
    model, proc = load_model(root/"fashion-mnist-deit-distilled"), DeiTImageProcessor.from_pretrained(root/"fashion-mnist-deit-distilled")
    test_rgb = [Image.open(f).convert("RGB") for f in files]                  # colour images become grey too
    assert got == [p[0].label for p in predict(model, proc, files, top_k=1)] == [p[0].label for p in predict(model, proc, test_rgb, top_k=1)]
