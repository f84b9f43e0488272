"""`deit-scratch train` and torchrun: many processes against one (gloo, CPU), a killed two-process run resumed, a failing
rank ending the run, the command end to end on a tiny class folder (with and without a teacher, then `predict`, then
transformers reading the output), fine-tuning from transformers and facebookresearch checkpoints with other classes,
and every refusal with its message and exit code. Models are tiny and random: the plumbing is what is tested."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from deit_scratch.config import DeiTConfig, PRESETS
from deit_scratch.heads import DeiTForImageClassification, DeiTForImageClassificationWithTeacher
from deit_scratch.launch import main, student_from, run_settings, check_output
from deit_scratch.pretrained import hf_to_fb, load_model
from deit_scratch.image_processor import DeiTImageProcessor
from deit_scratch.preprocessing import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from deit_scratch.training import ConvNet, save_convnet
from deit_test_utils import run_torchrun

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
ENV.pop("DEIT_SCRATCH_DEBUG", None)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
CLASSES = ("apple", "banana", "cherry")

def tiny_config(**kw):
    return DeiTConfig(**{**dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                image_size=32, patch_size=8, encoder_stride=8, layer_norm_eps=1e-6), **kw})

def cli(capsys, *args):
    "Run `main` in-process: (exit code, stdout, stderr)"
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err

def make_folder(root:Path, classes=CLASSES, per_class=12, size=(40, 36), seed=0):
    "Class folders of small random-coloured images with a class-dependent tint (learnable, a little)"
    g = torch.Generator().manual_seed(seed)
    for c, name in enumerate(classes):
        (root/name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            x = (torch.rand(size[1], size[0], 3, generator=g) * 120).to(torch.uint8)
            x[..., c % 3] += 120
            Image.fromarray(x.numpy()).save(root/name/f"{k:02d}.png")
    return root

def weights(d:Path) -> dict: return load_file(str(d/"model.safetensors"))


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory): return tmp_path_factory.mktemp("launch")

@pytest.fixture(scope="module")
def photos(work): return make_folder(work/"photos")

@pytest.fixture(scope="module")
def ckpt(work):
    "A tiny distilled DeiT with 10 classes at 32 px, in transformers' format (with a processor) and as a facebookresearch .pth"
    torch.manual_seed(0)
    m = DeiTForImageClassificationWithTeacher(tiny_config(num_labels=10)).eval()
    m.save_pretrained(work/"hf", image_processor=DeiTImageProcessor(size=36, crop_size=32, image_mean=IMAGENET_DEFAULT_MEAN,
                                                                     image_std=IMAGENET_DEFAULT_STD))
    torch.save({"model": hf_to_fb(m.hf_state_dict())}, work/"fb.pth")
    (work/"fb_config.json").write_text(m.config.to_json_string())
    return m

@pytest.fixture(scope="module")
def teacher3(work):
    "A tiny DeiT teacher that knows the three classes (random weights: it only has to have them)"
    torch.manual_seed(1)
    t = DeiTForImageClassificationWithTeacher(tiny_config(num_labels=3, id2label=dict(enumerate(CLASSES)), image_size=48, patch_size=16))
    t.save_pretrained(work/"teacher3", image_processor=DeiTImageProcessor(size=54, crop_size=48, image_mean=IMAGENET_DEFAULT_MEAN,
                                                                            image_std=IMAGENET_DEFAULT_STD))
    return work/"teacher3"

def train_args(data, out, *more):
    return ["train", data, "--output", out, "--epochs", 2, "--batch-size", 8, "--lr", "1e-3", "--no-progress", *more]


# ---------------------------------------------------------------- many processes (torchrun, gloo)
STEP = '''
import sys, torch
from deit_scratch.config import DeiTConfig
from deit_scratch.heads import DeiTForImageClassificationWithTeacher
from deit_scratch.data import TensorDataset
from deit_scratch.training import Trainer, TrainConfig
from deit_scratch.launch import init_distributed
init_distributed("cpu")
g = torch.Generator().manual_seed(0)
ds = TensorDataset((torch.rand(16, 3, 16, 16, generator=g) * 255).to(torch.uint8), torch.randint(0, 4, (16,), generator=g))
torch.manual_seed(0)
model = DeiTForImageClassificationWithTeacher(DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, image_size=16, patch_size=4, num_labels=4))
cfg = TrainConfig(epochs=1, batch_size=16, lr=5e-4, warmup_epochs=0, mixup_alpha=0, cutmix_alpha=0, ema_decay=None, progress=False,
                  bf16=False)                    # pinned: the claim is about fp32, whatever this CPU's default
t = Trainer(model, ds, None, cfg); t.fit()
# AdamW's first moment after one step is (1 - beta1) * gradient: linear in the all-reduced gradient, so it shows the
# gradients' agreement without Adam's normalisation (which turns a 1e-9 difference on a near-zero gradient into +-lr)
moments = {n: t.opt.state[p]["exp_avg"] for n, p in model.named_parameters() if "exp_avg" in t.opt.state.get(p, {})}
if t.is_main: torch.save({"model": model.state_dict(), "exp_avg": moments, "steps": t.step, "world": t.world_size}, sys.argv[1])
# leave the process group before exiting: without it, gloo's threads can still be running at exit and the process
# aborts ("terminate called without an active exception", SIGABRT) now and then
if torch.distributed.is_initialized(): torch.distributed.destroy_process_group()
'''

@pytest.mark.slow
@pytest.mark.xdist_group("torchrun")   # each starts 2 processes: never two such tests at once
def test_two_processes_take_the_step_of_one(tmp_path):
    (tmp_path/"step.py").write_text(STEP)
    subprocess.run([sys.executable, tmp_path/"step.py", tmp_path/"one.pt"], check=True, env=ENV, capture_output=True, timeout=120)
    r = run_torchrun(lambda: subprocess.run(TORCHRUN + [tmp_path/"step.py", tmp_path/"two.pt"], env=ENV, capture_output=True, text=True, timeout=180))
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = torch.load(tmp_path/"one.pt", weights_only=True), torch.load(tmp_path/"two.pt", weights_only=True)
    assert (one["steps"], one["world"], two["steps"], two["world"]) == (1, 1, 1, 2)
    torch.manual_seed(0)
    init = DeiTForImageClassificationWithTeacher(DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, image_size=16, patch_size=4, num_labels=4)).state_dict()
    moved = max((one["model"][k] - init[k]).abs().max().item() for k in init)
    assert moved > 1e-4, "the step did not change the weights: the comparison would prove nothing"
    # The same 16 images' gradients, summed in another order and grouping (two means of 8, averaged by the all-reduce).
    # A weight gradient sums B*N = 16 images * 18 tokens = 288 products; a reordered float32 sum of n terms differs by at
    # most n*u*sum|terms| (u = 2**-24), and the backward chains a few such sums: 4*288*u = 6.9e-5, relative to the gradients' scale.
    g1, g2 = one["exp_avg"], two["exp_avg"]
    scale = max(g.abs().max().item() for g in g1.values())
    diff = max((g1[n] - g2[n]).abs().max().item() for n in g1)
    assert diff <= 4 * 288 * 2**-24 * scale, (diff, scale)

KILL_AFTER_FIRST = '''
import os, signal, sys
from deit_scratch import training
from deit_scratch.launch import main
save = training.Trainer.save
def save_then_die(self):
    save(self)                                  # every rank: the checkpoint is complete (a barrier) ...
    if self.epoch == 1: os.kill(os.getpid(), signal.SIGKILL)   # ... then each process is killed
training.Trainer.save = save_then_die
sys.exit(main())
'''

@pytest.mark.slow
@pytest.mark.xdist_group("torchrun")   # each starts 2 processes: never two such tests at once
def test_killed_two_process_run_resumes_to_the_same_weights(tmp_path, photos, ckpt):
    hf = tmp_path/"hf"; ckpt.save_pretrained(hf)
    common = ["train", str(photos), "--model", str(hf), "--epochs", "3", "--batch-size", "8", "--lr", "1e-3", "--no-progress", "--seed", "5"]
    r = subprocess.run(TORCHRUN + ["-m", "deit_scratch.launch", *common, "--output", str(tmp_path/"straight")],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (tmp_path/"kill.py").write_text(KILL_AFTER_FIRST)
    r = subprocess.run(TORCHRUN + [str(tmp_path/"kill.py"), *common, "--output", str(tmp_path/"killed")], env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0, "the run was not killed"
    ck = torch.load(tmp_path/"killed"/"checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["world_size"] == 2 and len(ck["rng"]) == 2
    r = subprocess.run(TORCHRUN + ["-m", "deit_scratch.launch", *common, "--output", str(tmp_path/"killed"), "--resume"],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = weights(tmp_path/"straight"/"model"), weights(tmp_path/"killed"/"model")
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k                  # bit for bit
    ea, eb = weights(tmp_path/"straight"/"model_ema"), weights(tmp_path/"killed"/"model_ema")
    for k in ea: assert torch.equal(ea[k], eb[k]), k
    la = [json.loads(l) for l in (tmp_path/"straight"/"metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(l) for l in (tmp_path/"killed"/"metrics.jsonl").read_text().splitlines()]
    assert [r["valid_loss"] for r in la] == [r["valid_loss"] for r in lb] and len(la) == 3

LATE_RANK_1 = '''
import sys, time
from deit_scratch import launch
check = launch.check_output
def late(*a, **k):
    if launch.dist_info()[0] == 1: time.sleep(3)    # rank 1 reads DIR after rank 0 could have written run.json into it
    return check(*a, **k)
launch.check_output = late
sys.exit(launch.main())
'''

@pytest.mark.slow
@pytest.mark.xdist_group("torchrun")
def test_a_slow_rank_still_sees_a_new_output_folder(tmp_path, photos):
    "Every rank decides new/resume/replace from DIR as it was: rank 0 writes into it only after all have looked"
    (tmp_path/"late.py").write_text(LATE_RANK_1)
    args = train_args(photos, tmp_path/"run", "--image-size", 32, "--epochs", 1)
    r = run_torchrun(lambda: subprocess.run(TORCHRUN + [str(tmp_path/"late.py"), *map(str, args)], env=ENV, capture_output=True,
                                            text=True, timeout=300), before_retry=lambda: shutil.rmtree(tmp_path/"run", ignore_errors=True))
    assert r.returncode == 0 and "already holds a run" not in r.stderr, r.stderr[-3000:]
    assert (tmp_path/"run"/"model"/"model.safetensors").is_file()

FAIL_ON_RANK_1 = '''
import os, sys
from deit_scratch import data
from deit_scratch.launch import main
load, calls = data.load_image, [0]
def flaky(path):
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] > 20: raise OSError(f"disk on fire reading {path}")
    return load(path)
data.load_image = flaky
sys.exit(main())
'''

@pytest.mark.slow
@pytest.mark.xdist_group("torchrun")   # each starts 2 processes: never two such tests at once
def test_a_failing_rank_ends_the_run_quickly(tmp_path, photos, ckpt):
    hf = tmp_path/"hf"; ckpt.save_pretrained(hf)
    (tmp_path/"fail.py").write_text(FAIL_ON_RANK_1)
    t0 = time.perf_counter()
    r = subprocess.run(TORCHRUN + [str(tmp_path/"fail.py"), "train", str(photos), "--model", str(hf), "--epochs", "5", "--batch-size", "8",
                                   "--no-progress", "--output", str(tmp_path/"run")], env=ENV, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - t0
    assert r.returncode != 0
    assert "deit-scratch train: error: [rank 1/2] disk on fire reading" in r.stderr, r.stderr[-3000:]
    assert took < 90, f"the run took {took:.0f} s to end after rank 1 failed (collectives wait 30 min: the others hung)"


# ---------------------------------------------------------------- the command end to end
def test_train_predict_and_transformers_reads_it(tmp_path, capsys, photos, ckpt, teacher3):
    transformers = pytest.importorskip("transformers")
    for kind, extra in (("plain", []), ("teacher", ["--teacher", teacher3, "--distillation", "soft"])):
        out = tmp_path/kind
        code, o, e = cli(capsys, *train_args(photos, out, "--model", _hf(tmp_path, ckpt), "--image-size", 48, *extra))
        assert code == 0, e
        assert "new tensors: " in o and ("cls_classifier.weight" in o if kind == "teacher" else "classifier.weight" in o)
        assert "resampled: deit.embeddings.position_embeddings (1, 18, 32) -> (1, 38, 32)" in o
        names = sorted(p.name for p in out.iterdir())
        assert {"model", "model_ema", "metrics.jsonl", "checkpoint.pt", "run.json", "split.json", "history.png"} <= set(names), names
        rows = [json.loads(l) for l in (out/"metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2]
        cfg = json.loads((out/"model"/"config.json").read_text())
        assert cfg["id2label"] == {"0": "apple", "1": "banana", "2": "cherry"} and cfg["image_size"] == 48
        assert cfg["label2id"] == {"apple": 0, "banana": 1, "cherry": 2}              # not the checkpoint's old names
        assert cfg["architectures"] == ["DeiTForImageClassificationWithTeacher" if kind == "teacher" else "DeiTForImageClassification"]
        assert json.loads((out/"model"/"preprocessor_config.json").read_text())["crop_size"] == {"height": 48, "width": 48}
        val = json.loads((out/"split.json").read_text())["val"]
        assert len(val) == 3 and sorted(v.split("/")[0] for v in val) == list(CLASSES)        # one per class, 10% of 12
        # predict reads the output
        code, o, e = cli(capsys, "predict", photos/"banana"/"00.png", "--model", out/"model", "--json")
        assert code == 0, e
        doc = json.loads(o)
        assert {p["label"] for p in doc["results"][0]["predictions"]} == set(CLASSES)
        # transformers reads it and computes the same logits
        ours = load_model(out/"model").eval()
        hf_cls = getattr(transformers, cfg["architectures"][0])
        theirs = hf_cls.from_pretrained(out/"model").eval()
        proc = DeiTImageProcessor.from_pretrained(out/"model")
        x = proc([Image.open(photos/c/"01.png") for c in CLASSES], return_tensors="pt")["pixel_values"]
        with torch.no_grad(): a, b = ours(x).logits, theirs(pixel_values=x).logits
        assert a.shape == (3, 3) and a.dtype == torch.float32
        assert (a - b).abs().max().item() < 1e-5

def _hf(tmp_path, ckpt):
    d = tmp_path/"hf_src"
    if not d.exists(): ckpt.save_pretrained(d, image_processor=DeiTImageProcessor(size=36, crop_size=32))
    return d

def test_fine_tune_from_a_facebookresearch_pth_with_other_classes(tmp_path, capsys, photos, ckpt, work):
    out = tmp_path/"fb"
    code, o, e = cli(capsys, *train_args(photos, out, "--model", work/"fb.pth", "--config", work/"fb_config.json", "--stop-after", 1,
                                         "--ema-decay", 0))
    assert code == 0, e
    assert not (out/"model_ema").exists() and "EMA" not in o                   # --ema-decay 0: no EMA
    assert "new tensors: classifier.weight, classifier.bias" in o
    m = load_model(out/"model")
    assert type(m).__name__ == "DeiTForImageClassification" and m.config.num_labels == 3 and m.config.use_distillation_token
    assert len((out/"metrics.jsonl").read_text().splitlines()) == 1            # --stop-after 1 of a 2-epoch schedule

def test_student_from_keeps_the_backbone_and_reports_new_heads(work, ckpt):
    for ref, config in ((work/"hf", None), (work/"fb.pth", tiny_config(num_labels=10))):
        s, report = student_from(ref, dict(enumerate(CLASSES)), image_size=64, config=config)
        assert sorted(report["new"]) == ["cls_classifier.bias", "cls_classifier.weight", "distillation_classifier.bias", "distillation_classifier.weight"]
        assert report["resampled"] == ["deit.embeddings.position_embeddings (1, 18, 32) -> (1, 66, 32)"]
        sd, src = s.state_dict(), ckpt.state_dict()
        for k in src:
            if "classifier" not in k and "position_embeddings" not in k: assert torch.equal(sd[k], src[k]), k
        assert s.cls_classifier.weight.shape == (3, 32) and not torch.equal(s.cls_classifier.weight[:3], src["cls_classifier.weight"][:3])

@pytest.mark.slow
def test_fashion_mnist_with_a_convnet_teacher(tmp_path, capsys, fashion_dir):
    save_convnet(ConvNet(1, 10, (8, 16)), tmp_path/"convnet")
    out = tmp_path/"fashion"
    code, o, e = cli(capsys, "train", "fashion-mnist", "--output", out, "--teacher", tmp_path/"convnet", "--limit", 40, "--epochs", 1,
                     "--no-progress", "--val-fraction", 0)
    assert code == 0, e
    assert "DeiTForImageClassificationWithTeacher from preset fashion-student, 10 classes, 28 px" in o and "distillation hard" in o
    assert "40 training images, 0 validation" in o
    assert json.loads((out/"run.json").read_text())["train_config"]["lr"] == 7e-4       # the preset's recipe


# ---------------------------------------------------------------- refusals: one line, exit code 1 (2 for usage)
def test_errors(tmp_path, capsys, photos, ckpt, work):
    hf = _hf(tmp_path, ckpt)
    (tmp_path/"empty").mkdir()
    make_folder(tmp_path/"single", classes=("only",), per_class=3)
    (tmp_path/"noimages"/"a").mkdir(parents=True); (tmp_path/"noimages"/"b").mkdir(); (tmp_path/"noimages"/"a"/"notes.txt").write_text("x")
    vit = DeiTForImageClassification(tiny_config(num_labels=3, use_distillation_token=False)); vit.save_pretrained(tmp_path/"vit")
    save_convnet(ConvNet(3, 5, (8, 16)), tmp_path/"convnet5")
    cases = [
        (train_args(tmp_path/"empty", tmp_path/"o1"), "0 class folders"),
        (train_args(tmp_path/"single", tmp_path/"o2"), "has 1 class folder (only): a classifier needs at least two"),
        (train_args(tmp_path/"noimages", tmp_path/"o3"), "no images found"),
        (train_args(tmp_path/"missing", tmp_path/"o4"), "no such folder"),
        (train_args(photos, tmp_path/"o5", "--model", hf, "--teacher", tmp_path/"convnet5"), "has 5 classes but DATA has 3"),
        (train_args(photos, tmp_path/"o6", "--model", tmp_path/"vit", "--teacher", tmp_path/"convnet5"), "has no distillation token"),
        (train_args(photos, tmp_path/"o7", "--model", hf, "--distillation", "soft"), "--distillation soft needs a --teacher"),
        (train_args(photos, tmp_path/"o8", "--model", hf, "--resume"), "holds no run"),
        (train_args(photos, tmp_path/"o9", "--model", "no_such_preset_or_file"), "no_such_preset_or_file"),
        (train_args(photos, photos/"apple"/"00.png", "--model", hf), "is a file, expected a directory"),
    ]
    for argv, msg in cases:
        code, o, e = cli(capsys, *argv)
        assert code == 1, (argv, e)
        assert msg in e, (msg, e)
        assert e.startswith("deit-scratch train: error: ") and e.count("\n") == 1, e
    # an output that holds a run: refused without --resume/--force, and left as it was
    run = tmp_path/"run"
    code, _, e = cli(capsys, *train_args(photos, run, "--model", hf, "--stop-after", 1)); assert code == 0, e
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    code, _, e = cli(capsys, *train_args(photos, run, "--model", hf))
    assert code == 1 and "already holds a run" in e and "--resume" in e and "--force" in e
    code, _, e = cli(capsys, *train_args(photos, run, "--model", hf, "--lr", "2e-3", "--resume"))
    assert code == 1 and "lr='1e-3'" not in e and "other settings: lr=0.001 in the run, 0.002 now" in e, e
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    code, _, e = cli(capsys, *train_args(photos, run, "--model", hf, "--resume")); assert code == 0, e      # finishes the schedule
    assert len((run/"metrics.jsonl").read_text().splitlines()) == 2
    (run/"mine.txt").write_text("not the run's")
    code, _, e = cli(capsys, *train_args(photos, run, "--model", hf, "--force", "--stop-after", 1)); assert code == 0, e
    assert len((run/"metrics.jsonl").read_text().splitlines()) == 1 and (run/"mine.txt").read_text() == "not the run's"
    # usage errors: exit code 2
    for argv in (["train", photos], train_args(photos, tmp_path/"u", "--epochs", "0"), train_args(photos, tmp_path/"u", "--resume", "--force"),
                 train_args(photos, tmp_path/"u", "--val-fraction", "1.5"), train_args(photos, tmp_path/"u", "--distillation", "medium")):
        code, _, e = cli(capsys, *argv)
        assert code == 2 and "error:" in e and e.count("\n") == 1, (argv, e)

def test_unreadable_images_are_skipped_and_listed(tmp_path, capsys, ckpt):
    data = make_folder(tmp_path/"data")
    (data/"apple"/"broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (data/"cherry"/"empty.png").write_bytes(b"")
    out = tmp_path/"out"
    code, o, e = cli(capsys, *train_args(data, out, "--model", _hf(tmp_path, ckpt), "--stop-after", 1))
    assert code == 0, e
    assert "skipped 2 unreadable image(s)" in e and "broken.jpg" in e and "empty.png" in e and "skipped_images.txt" in e
    listed = (out/"skipped_images.txt").read_text().splitlines()
    assert sorted(Path(l.split("\t")[0]).name for l in listed) == ["broken.jpg", "empty.png"]
    assert "36 training images" not in o and "33 training images, 3 validation" in o

def test_an_image_that_breaks_during_training_stops_the_run_with_its_name(tmp_path, capsys, ckpt):
    data = make_folder(tmp_path/"data")
    p = data/"banana"/"05.jpg"
    Image.open(data/"banana"/"05.png").save(p, "JPEG"); (data/"banana"/"05.png").unlink()
    p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])   # a JPEG cut in half: its header passes the check, decoding fails
    code, o, e = cli(capsys, *train_args(data, tmp_path/"out", "--model", _hf(tmp_path, ckpt), "--val-fraction", 0))
    assert code == 1 and "05.jpg" in e and "truncated" in e and e.count("\n") == 1, e

def test_run_settings_ignore_where_and_how(tmp_path):
    import argparse
    a = argparse.Namespace(data="d", output="o", model="m", epochs=2, device="cpu", no_progress=True, resume=False, force=False,
                           num_workers=0, stop_after=None, command="train")
    assert run_settings(a) == {"data": "d", "epochs": 2, "model": "m"}
    with pytest.raises(ValueError, match="holds no run"): check_output(tmp_path, {}, resume=True, force=False)


# ---------------------------------------------------------------- presets, run folders, label maps (issue 22)
def inverse_maps(cfg:dict) -> bool:
    "id2label and label2id of a config.json are exact inverses"
    return cfg["label2id"] == {v: int(k) for k, v in cfg["id2label"].items()} and len(cfg["label2id"]) == len(cfg["id2label"])

def test_label_maps_stay_inverse_after_a_head_change(tmp_path, ckpt):
    "student_from (checkpoint or preset) and from_pretrained with new classes: label2id follows id2label"
    names = {0: "apple", 1: "banana", 2: "cherry"}
    for ref in (str(_hf(tmp_path, ckpt)), "deit_tiny_distilled_patch16_224", "fashion-student"):
        m, _ = student_from(ref, names, image_size=32)
        assert m.config.label2id == {"apple": 0, "banana": 1, "cherry": 2} and m.config.num_labels == 3, ref
    with pytest.warns(UserWarning, match="Newly initialised, not in the checkpoint"):              # 10 classes -> 3: new heads
        m = DeiTForImageClassificationWithTeacher.from_pretrained(_hf(tmp_path, ckpt), num_labels=3, id2label=names)
    m.save_pretrained(tmp_path/"three")
    assert inverse_maps(json.loads((tmp_path/"three"/"config.json").read_text()))

@pytest.mark.slow
@pytest.mark.parametrize("preset", [None, *PRESETS], ids=lambda p: p or "default")
def test_train_from_a_preset_on_a_class_folder(tmp_path, capsys, photos, preset):
    "deit-scratch train DATA --output OUT, with no --model and with every preset: trains; OUT loads as a model"
    out = tmp_path/"run"
    more = ["--model", preset] if preset else []
    code, o, e = cli(capsys, *train_args(photos, out, "--image-size", 32, "--epochs", 1, "--batch-size", 12, *more))
    assert code == 0, e
    cfg = json.loads((out/"model"/"config.json").read_text())
    assert cfg["id2label"] == {"0": "apple", "1": "banana", "2": "cherry"} and inverse_maps(cfg), cfg
    assert f"preset {preset or 'deit_tiny_distilled_patch16_224'}" in o, o
    code, o, e = cli(capsys, "predict", photos/"banana"/"00.png", "--model", out, "--json")   # the run folder itself
    assert code == 0, e
    assert {p["label"] for p in json.loads(o)["results"][0]["predictions"]} == set(CLASSES)

@pytest.mark.slow
def test_a_run_folder_is_a_teacher_and_exports_with_inverse_label_maps(tmp_path, capsys, photos):
    "train --teacher RUN_DIR and export RUN_DIR: a run folder means its model/; the exported config keeps the label maps inverse"
    teacher, student = tmp_path/"teacher", tmp_path/"student"
    assert cli(capsys, *train_args(photos, teacher, "--image-size", 32, "--epochs", 1))[0] == 0
    code, o, e = cli(capsys, *train_args(photos, student, "--image-size", 32, "--epochs", 1, "--teacher", teacher))
    assert code == 0, e
    assert f"teacher: {teacher}" in o, o
    from deit_scratch.export import main as export_main
    pytest.importorskip("onnxscript")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert export_main(["export", str(student), str(tmp_path/"served"/"model.onnx")]) == 0
    assert inverse_maps(json.loads((tmp_path/"served"/"config.json").read_text()))

def test_two_cls_control_through_the_cli(tmp_path, capsys, photos, teacher3):
    "train --distillation two-cls: a second class token and head, no teacher; with --teacher it is refused"
    code, o, e = cli(capsys, *train_args(photos, tmp_path/"two", "--image-size", 32, "--epochs", 1, "--distillation", "two-cls"))
    assert code == 0, e
    assert json.loads((tmp_path/"two"/"model"/"config.json").read_text())["architectures"] == ["DeiTForImageClassificationWithTeacher"]
    code, o, e = cli(capsys, *train_args(photos, tmp_path/"x", "--distillation", "two-cls", "--teacher", teacher3))
    assert code == 1 and "control without a teacher" in e, e

def test_run_torchrun_retries_only_the_known_abort():
    "One retry, after `before_retry`, for a worker's abort at exit; any other failure is returned as it is"
    from types import SimpleNamespace as NS
    from deit_test_utils import TORCHRUN_ABORT
    runs, prepared = iter([NS(returncode=1, stderr=TORCHRUN_ABORT), NS(returncode=0, stderr="")]), []
    with pytest.warns(UserWarning, match="retried once"):
        assert run_torchrun(lambda: next(runs), before_retry=lambda: prepared.append(1)).returncode == 0
    assert prepared == [1]
    other = iter([NS(returncode=1, stderr="ValueError: bad"), NS(returncode=0, stderr="")])
    assert run_torchrun(lambda: next(other)).returncode == 1
