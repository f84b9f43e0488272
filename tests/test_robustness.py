"""Robustness, class by class (issue 9; the table of guards is in tests/README.md):
1. saves that cannot corrupt, 2. files that cannot hang or escape, 3. images that cannot mislead, 4. configs and inputs
validated at the edge. Each test says which class it covers."""
import contextlib, errno, io, json, math, os, resource, signal, stat, subprocess, sys, textwrap, threading, time, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import load_file, save_file

import deit_scratch as ds
from deit_scratch import files as F
from deit_scratch.pretrained import load_model
from deit_scratch.image_processor import DeiTImageProcessor
from deit_scratch.preprocessing import PREPROCESSOR_CONFIG

CFG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8,
           encoder_stride=8)
ROOT = Path(__file__).resolve().parents[1]
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

def tiny(seed:int, labels=("cat", "dog", "emu"), cls=ds.DeiTForImageClassificationWithTeacher, **kw):
    torch.manual_seed(seed)
    return cls(ds.DeiTConfig(**CFG, id2label=dict(enumerate(labels)), **kw)).eval()

PX = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))

def logits(model_or_dir) -> torch.Tensor:
    m = load_model(model_or_dir) if isinstance(model_or_dir, (str, Path)) else model_or_dir
    with torch.no_grad(): return m(PX).logits

def run_py(code:str, env:dict|None=None) -> subprocess.CompletedProcess:
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120)

def no_hang(f, seconds:float=30):
    "Run f() in a thread; fail (instead of hanging the suite) if it has not returned after `seconds`"
    box = {}
    def go():
        try: box["value"] = f()
        except BaseException as e: box["error"] = e
    t = threading.Thread(target=go, daemon=True); t.start(); t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s: it hangs"
    return box

def entries(d:Path) -> list: return sorted(f.name for f in d.iterdir())

@pytest.fixture
def old_ckpt(tmp_path):
    "A good checkpoint directory (with a processor) and its logits and labels"
    m = tiny(0); d = tmp_path/"ckpt"
    m.save_pretrained(d, image_processor=DeiTImageProcessor(crop_size=32, size=40))
    return d, logits(m), dict(m.config.id2label)

def assert_old(d, want, labels):
    "The directory still loads the old checkpoint: same logits, same labels, same processor, no temporary files"
    got = load_model(d)
    torch.testing.assert_close(logits(got), want, rtol=0, atol=0)
    assert got.config.id2label == labels
    assert DeiTImageProcessor.from_pretrained(d).crop_size == {"height": 32, "width": 32}

# ---- 1. Saving never destroys or contradicts what was there -----------------------------------------------------

SAVE_NEW = """
import torch, deit_scratch as ds
from deit_scratch.image_processor import DeiTImageProcessor
torch.manual_seed(1)
m = ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**{cfg}, id2label={{0: "new0", 1: "new1"}}))
"""

@pytest.mark.slow
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize("how", ["EFBIG", "SIGXFSZ"], ids=["disk-full-error", "killed-by-file-size-limit"])
def test_save_on_a_full_disk_leaves_the_old_checkpoint(old_ckpt, safe, how):
    "1: RLIMIT_FSIZE in a child process: writing the weights fails (or kills it); the old checkpoint loads, unchanged"
    d, want, labels = old_ckpt
    code = SAVE_NEW.format(cfg=CFG) + f"""
import resource, signal
signal.signal(signal.SIGXFSZ, {'signal.SIG_IGN' if how == 'EFBIG' else 'signal.SIG_DFL'})   # Python ignores it; the default kills
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))     # the weights are ~150 kB: they cannot be written
try: m.save_pretrained({str(d)!r}, safe_serialization={safe}, image_processor=DeiTImageProcessor())
except OSError as e: print("ERROR", type(e).__name__, e); raise SystemExit(3)
"""
    r = run_py(code)
    if how == "EFBIG":
        assert r.returncode == 3, r.stderr
        assert "SaveError" in r.stdout and "nothing there was changed" in r.stdout, r.stdout
    else: assert r.returncode == -signal.SIGXFSZ, (r.returncode, r.stderr)
    assert_old(d, want, labels)
    if how == "EFBIG": assert not [n for n in entries(d) if n.startswith(".")]     # nothing left behind
    tiny(2).save_pretrained(d)                                   # the next save cleans what the killed one left
    assert entries(d) == ["config.json", "model.safetensors", PREPROCESSOR_CONFIG]

@contextlib.contextmanager
def read_only(d:Path):
    "Make `d` read-only: chmod for a normal user; root ignores permissions, so refuse every creation inside it instead"
    if os.geteuid() != 0:
        os.chmod(d, 0o555)
        try: yield
        finally: os.chmod(d, 0o755)
        return
    real_open, real_mkdir = os.open, os.mkdir
    def inside(p): return Path(os.path.abspath(p)).parent == d.resolve() or Path(os.path.abspath(p)).parent.parent == d.resolve()
    def deny(p): raise PermissionError(errno.EACCES, "Permission denied", str(p))
    def op(p, flags, *a, **k): return deny(p) if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and inside(p) else real_open(p, flags, *a, **k)
    def mk(p, *a, **k): return deny(p) if inside(p) else real_mkdir(p, *a, **k)
    def rep(a, b): deny(b) if inside(b) else real_replace(a, b)
    real_replace = os.replace
    os.open, os.mkdir, os.replace = op, mk, rep
    try: yield
    finally: os.open, os.mkdir, os.replace = real_open, real_mkdir, real_replace

def test_save_into_a_read_only_directory(old_ckpt):
    "1: a directory the user may not write: a clear error, the old checkpoint untouched"
    d, want, labels = old_ckpt
    torch.manual_seed(1)
    new = ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG, id2label={0: "new0", 1: "new1"}))
    with read_only(d):
        with pytest.raises(OSError, match=f"Could not save into '{d}' .*Permission denied.*nothing there was changed"):
            new.save_pretrained(d, image_processor=DeiTImageProcessor())
    assert_old(d, want, labels)
    assert entries(d) == ["config.json", "model.safetensors", PREPROCESSOR_CONFIG]

@pytest.mark.slow
@pytest.mark.parametrize("victim", ["model.safetensors", PREPROCESSOR_CONFIG, "config.json"])
def test_kill_between_renames_completes_on_load(old_ckpt, victim):
    "1: killed after the commit, between two renames: the next load completes the save (new weights AND new labels)"
    d, _, _ = old_ckpt
    code = SAVE_NEW.format(cfg=CFG) + f"""
import os
real = os.replace
def dying(a, b):
    if str(b).endswith({victim!r}): os._exit(9)
    real(a, b)
os.replace = dying
m.save_pretrained({str(d)!r}, image_processor=DeiTImageProcessor(crop_size=24, size=30))
"""
    r = run_py(code)
    assert r.returncode == 9, r.stderr
    assert F.JOURNAL in entries(d)                               # the commit was made, the renames not all done
    got = load_model(d)
    assert got.config.id2label == {0: "new0", 1: "new1"}
    torch.manual_seed(1)
    new = ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG, id2label={0: "new0", 1: "new1"})).eval()
    torch.testing.assert_close(logits(got), logits(new), rtol=0, atol=0)
    assert DeiTImageProcessor.from_pretrained(d).crop_size == {"height": 24, "width": 24}
    assert entries(d) == ["config.json", "model.safetensors", PREPROCESSOR_CONFIG]

@pytest.mark.slow
def test_a_save_after_a_killed_one_completes_it_first(old_ckpt):
    "1: the next *save* (not only a load) finishes an interrupted one, under the directory's lock, then writes its own"
    d, _, _ = old_ckpt
    r = run_py(SAVE_NEW.format(cfg=CFG) + f"""
import os
real = os.replace
os.replace = lambda a, b: os._exit(9) if str(b).endswith("model.safetensors") else real(a, b)
m.save_pretrained({str(d)!r})
""")
    assert r.returncode == 9 and F.JOURNAL in entries(d), r.stderr
    third = tiny(3, labels=("x", "y", "z", "w")); box = no_hang(lambda: third.save_pretrained(d, safe_serialization=False))
    assert "error" not in box, box
    got = load_model(d)
    assert got.config.id2label == {0: "x", 1: "y", 2: "z", 3: "w"}
    torch.testing.assert_close(logits(got), logits(third), rtol=0, atol=0)
    assert entries(d) == ["config.json", PREPROCESSOR_CONFIG, "pytorch_model.bin"]

def test_interrupted_save_in_a_read_only_directory_is_an_error(old_ckpt):
    "1: a journal that cannot be carried out (read-only) is a clear error, not a silent mix of two saves"
    d, _, _ = old_ckpt
    stage = d/".deit-scratch-tmp-0123456789abcdef"; stage.mkdir(); (stage/"model.safetensors").write_bytes((d/"model.safetensors").read_bytes())
    (d/F.JOURNAL).write_text(json.dumps({"rename": [[f"{stage.name}/model.safetensors", "model.safetensors"]], "remove": []}))
    with read_only(d):
        with pytest.raises(ValueError, match="interrupted half-way, and it cannot be completed .*may mix two saves"): load_model(d)
    load_model(d)                                                # writable again: completed, and it loads
    assert entries(d) == ["config.json", "model.safetensors", PREPROCESSOR_CONFIG]

def shard(model, d:Path):
    "Write `model` as a two-shard checkpoint by hand (as transformers does for big models)"
    model.save_pretrained(d); sd = load_file(str(d/"model.safetensors")); (d/"model.safetensors").unlink()
    keys = sorted(sd); half = len(keys) // 2
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    save_file({k: sd[k] for k in keys[:half]}, str(d/names[0])); save_file({k: sd[k] for k in keys[half:]}, str(d/names[1]))
    (d/"model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: names[i >= half] for i, k in enumerate(keys)}}))

def test_sharded_checkpoint_loads_and_a_save_removes_stale_shards(tmp_path):
    "1: shards and their index loaded; a later save over them removes every file that would load instead of the new weights"
    d = tmp_path/"sharded"; old = tiny(0); shard(old, d)
    torch.testing.assert_close(logits(d), logits(old), rtol=0, atol=0)
    new = tiny(1); new.save_pretrained(d, safe_serialization=False)
    assert entries(d) == ["config.json", "pytorch_model.bin"]
    torch.testing.assert_close(logits(d), logits(new), rtol=0, atol=0)
    tiny(2).save_pretrained(d)                                   # and back: the .bin goes
    assert entries(d) == ["config.json", "model.safetensors"]

def test_stale_safetensors_beside_a_new_bin_never_loads(tmp_path):
    "1: the case of the issue: an old model.safetensors beside a new pytorch_model.bin"
    d = tmp_path/"c"; tiny(0).save_pretrained(d)
    new = tiny(1, labels=("a", "b")); new.save_pretrained(d, safe_serialization=False)
    got = load_model(d)
    assert got.config.id2label == {0: "a", 1: "b"}
    torch.testing.assert_close(logits(got), logits(new), rtol=0, atol=0)

def test_other_files_of_the_directory_are_kept(old_ckpt):
    "1: a save replaces the checkpoint's files only (a README, a training log stay)"
    d, _, _ = old_ckpt
    (d/"README.md").write_text("my notes"); (d/"train.log").write_text("epoch 1")
    tiny(1).save_pretrained(d)
    assert (d/"README.md").read_text() == "my notes" and (d/"train.log").read_text() == "epoch 1"
    assert (d/PREPROCESSOR_CONFIG).exists()                      # saving without a processor keeps the processor file

def test_single_file_saves_are_atomic(tmp_path, monkeypatch):
    "1: config.json and preprocessor_config.json alone: a failed write leaves the old file"
    c = ds.DeiTConfig(**CFG); c.save_pretrained(tmp_path); before = (tmp_path/"config.json").read_text()
    real = Path.write_bytes
    def half(self, data): real(self, data[:10]); raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes", half)
    with pytest.raises(OSError, match="No space left on device.*unchanged"): ds.DeiTConfig(**CFG, num_labels=7).save_pretrained(tmp_path)
    with pytest.raises(OSError, match="unchanged"): DeiTImageProcessor(crop_size=5).save_pretrained(tmp_path)
    monkeypatch.undo()
    assert (tmp_path/"config.json").read_text() == before
    assert entries(tmp_path) == ["config.json"]

# ---- 2. Files from elsewhere are untrusted ---------------------------------------------------------------------

def make_bad(path:Path, kind:str):
    "Replace `path` by a FIFO, a link to /dev/zero, a directory or an oversized (sparse) file"
    if path.exists() or path.is_symlink(): path.unlink()
    if kind == "fifo": os.mkfifo(path)
    elif kind == "dev-zero": os.symlink("/dev/zero", path)
    elif kind == "directory": path.mkdir()
    elif kind == "huge":
        with open(path, "wb") as f: f.truncate(F.MAX_JSON_BYTES + 1)   # sparse: costs no disk

KINDS = {"fifo": "FIFO (named pipe)", "dev-zero": "character device", "directory": "directory", "huge": "more than the 64.0 MiB"}

CHECKPOINT_CASES = [(n, k) for n in ["config.json", PREPROCESSOR_CONFIG, "model.safetensors", "pytorch_model.bin"] for k in KINDS
                    if not (k == "huge" and n.endswith((".safetensors", ".bin")))]     # weights have no size limit (models are GBs)

@pytest.mark.parametrize("name,kind", CHECKPOINT_CASES)
def test_special_files_in_a_checkpoint_are_errors_not_hangs(old_ckpt, name, kind):
    "2: a FIFO, /dev/zero, a directory or a huge file where a checkpoint file belongs: a clear error within seconds"
    d, _, _ = old_ckpt
    if name == "pytorch_model.bin": (d/"model.safetensors").unlink()
    make_bad(d/name, kind)
    load = (lambda: DeiTImageProcessor.from_pretrained(d)) if name == PREPROCESSOR_CONFIG else (lambda: load_model(d))
    box = no_hang(load)
    assert isinstance(box.get("error"), ValueError), box
    msg = str(box["error"])
    if kind == "directory" and name.endswith((".bin",)): assert "directory" in msg or "No weights" in msg, msg
    else: assert KINDS[kind] in msg and name in msg, msg

@pytest.mark.parametrize("kind", list(KINDS))
def test_special_files_as_images_are_errors_not_hangs(tmp_path, kind):
    "2: an image path that is a FIFO, a device, a directory: an error naming it"
    p = tmp_path/"photo.jpg"; make_bad(p, kind)
    if kind == "huge":
        with open(p, "wb") as f: f.truncate(F.MAX_IMAGE_BYTES + 1)          # sparse: a 2 GiB "image" costs no disk
    box = no_hang(lambda: DeiTImageProcessor()(str(p)))
    assert isinstance(box.get("error"), ValueError) and "photo.jpg" in str(box["error"]), box
    if kind == "huge": assert "more than the 2.0 GiB" in str(box["error"]), box

@pytest.mark.parametrize("bad,msg", [
    ({"weight_map": {"a": "/etc/passwd"}}, "no paths, no '..'"),
    ({"weight_map": {"a": "../outside.safetensors"}}, "no paths, no '..'"),
    ({"weight_map": {"a": "sub/dir.safetensors"}}, "no paths, no '..'"),
    ({"weight_map": {"a": "model.safetensors.index.json"}}, "must be .safetensors or .bin"),
    ({"metadata": {"total_size": 1}}, "has no weight_map"),
    ({"weight_map": []}, "has no weight_map"),
    ({"weight_map": {}}, "has no weight_map"),
    ({"weight_map": {"a": 3}}, "has no weight_map"),
], ids=["absolute", "dotdot", "subdir", "recursive", "missing", "list", "empty", "not-a-name"])
def test_shard_index_may_only_name_files_beside_it(tmp_path, bad, msg):
    "2: an index naming files outside its directory (or itself) is refused before anything is read"
    d = tmp_path/"c"; tiny(0).save_pretrained(d); (d/"model.safetensors").unlink()
    (d/"model.safetensors.index.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=msg.replace(".", r"\.").replace("(", r"\(")): load_model(d)

@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_and_bool_weights_are_refused(tmp_path, dtype):
    "2: a float parameter stored as an integer or bool tensor is not cast silently"
    d = tmp_path/"c"; tiny(0).save_pretrained(d)
    sd = load_file(str(d/"model.safetensors")); k = "deit.encoder.layer.0.output.dense.weight"
    sd[k] = (sd[k] * 100).to(dtype); save_file(sd, str(d/"model.safetensors"))
    with pytest.raises(ValueError, match=rf"integer or boolean tensors where DeiTForImageClassificationWithTeacher has float parameters: "
                                         rf"deit\.layers\.0\.mlp\.fc2\.weight \({str(dtype).replace('.', r'.')}\)"):
        load_model(d)

def test_a_tampered_save_journal_is_not_obeyed(tmp_path):
    "2: the journal is an untrusted file too: it may not rename or delete anything but its own files"
    d = tmp_path/"c"; tiny(0).save_pretrained(d); (tmp_path/"precious.txt").write_text("keep")
    for plan in ({"rename": [], "remove": ["../precious.txt"]}, {"rename": [["../precious.txt", "config.json"]], "remove": []},
                 {"rename": [[".evil.0123456789abcdef.tmp", "config.json"]], "remove": []}, {"rename": "x"}):
        (d/F.JOURNAL).write_text(json.dumps(plan))
        with pytest.raises(ValueError, match="not a save journal deit_scratch wrote: not obeyed"): load_model(d)
    assert (tmp_path/"precious.txt").read_text() == "keep"

@pytest.mark.slow
def test_offline_hub_fails_fast_in_one_line(tmp_path):
    "2: a hub id that is not cached, the hub unreachable: one line, seconds (not 25 s of retries), library and CLI"
    env = {"HF_HOME": str(tmp_path/"hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}   # nothing listens on port 9
    env = {**{k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}, **env}
    t0 = time.time()
    r = run_py("""
from deit_scratch.pretrained import load_model
try: load_model("facebook/deit-tiny-patch16-224")
except ValueError as e: print(e); raise SystemExit(3)
""", env=env)
    took = time.time() - t0
    assert r.returncode == 3, r.stderr
    assert "not in the local huggingface_hub cache, and 127.0.0.1 cannot be reached" in r.stdout, r.stdout
    assert "Retrying" not in r.stderr and took < 20, (took, r.stderr)
    (tmp_path/"x.png").write_bytes(b"")
    cli = subprocess.run([sys.executable, "-m", "deit_scratch.cli", "predict", str(tmp_path/"x.png"), "--model", "facebook/deit-tiny-patch16-224"],
                         capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert cli.returncode == 1 and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert "cannot be reached" in cli.stderr, cli.stderr
    off = run_py("""
from deit_scratch.pretrained import load_model
try: load_model("facebook/deit-tiny-patch16-224")
except ValueError as e: print(e)
""", env={**env, "HF_HUB_OFFLINE": "1"})
    assert "HF_HUB_OFFLINE is set" in off.stdout, off.stdout + off.stderr

# ---- 3. Images -----------------------------------------------------------------------------------------------------

MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F", "YCbCr"]

def image_of(mode:str, w:int, h:int, seed:int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16": return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I": return Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.int32), "I")
    if mode == "F": return Image.fromarray(rng.random((h, w), dtype=np.float32), "F")
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)

@HYP
@given(mode=st.sampled_from(MODES), w=st.integers(1, 80), h=st.integers(1, 80), seed=st.integers(0, 2**16),
       recipe=st.sampled_from(["transformers", "facebook"]))
def test_every_mode_and_size_gives_valid_pixels(mode, w, h, seed, recipe):
    "3: any mode and size (property): (1, 3, 32, 32) float32, finite, inside the normalised range of [0, 255]"
    proc = DeiTImageProcessor(size=40, crop_size=32) if recipe == "transformers" else DeiTImageProcessor.facebook_eval(32)
    pv = proc(image_of(mode, w, h, seed), return_tensors="pt").pixel_values
    assert pv.shape == (1, 3, 32, 32) and pv.dtype == torch.float32 and torch.isfinite(pv).all()
    mean, std = torch.tensor(proc.image_mean).view(3, 1, 1), torch.tensor(proc.image_std).view(3, 1, 1)
    lo, hi = (0 - mean) / std, (1 - mean) / std
    assert (pv[0] >= lo - 1e-6).all() and (pv[0] <= hi + 1e-6).all()

@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16_bit_files_are_scaled_like_a_hand_conversion(tmp_path, fmt):
    "3: a 16-bit file: the pixels are round(v * 255 / 65535) (transformers would clip nearly all of them to white)"
    ramp = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    p = tmp_path/f"ramp.{fmt}"; Image.fromarray(ramp).save(p)
    hand = Image.fromarray(np.round(ramp * (255 / 65535)).astype(np.uint8)).convert("RGB")
    proc = DeiTImageProcessor(size=40, crop_size=32)
    torch.testing.assert_close(proc(str(p), return_tensors="pt").pixel_values, proc(hand, return_tensors="pt").pixel_values, rtol=0, atol=0)
    big_endian = Image.frombytes("I;16B", (48, 48), ramp.astype(">u2").tobytes())
    torch.testing.assert_close(proc(big_endian, return_tensors="pt").pixel_values, proc(hand, return_tensors="pt").pixel_values, rtol=0, atol=0)
    white = np.asarray(Image.open(p).convert("RGB"))[..., 0]
    assert (white == 255).mean() > 0.98                          # what clipping would have given

@pytest.mark.parametrize("values,msg", [((300.0, 3.0), r"must hold values in \[0, 1\] \(1 is white\) or, .* in \[0, 255\]; got \[3, 300\]"),
                                         ((-1.0, 0.5), r"got \[-1, 0.5\]"), ((float("nan"), 0.5), "NaN or infinite")])
def test_float_images_outside_0_1_are_errors(values, msg):
    "3: mode F: no guess when the range is neither [0, 1] nor [0, 255]"
    im = Image.fromarray(np.array([values * 8] * 16, np.float32), "F")
    with pytest.raises(ValueError, match=msg): DeiTImageProcessor()(im)

@pytest.mark.parametrize("w,h", [(100_000, 1), (1, 100_000), (60_000, 2)])
def test_resized_size_is_checked_before_resizing(w, h):
    "3: a thin strip through the shorter-side resize would be billions of pixels: an error before any allocation"
    with pytest.raises(ValueError, match=r"would give \d+x\d+ = [\d,]+ pixels, more than PIL's limit"):
        DeiTImageProcessor.facebook_eval()(Image.new("RGB", (w, h)))

def test_float_arrays_in_0_1_warn_when_rescaled():
    "3: transformers 4's warning: a float array in [0, 1] with do_rescale=True would be divided by 255 twice"
    x = np.random.default_rng(0).random((40, 40, 3))
    with pytest.warns(UserWarning, match="rescale already rescaled images"): DeiTImageProcessor()(x)
    with pytest.warns(UserWarning, match="rescale already rescaled images"): DeiTImageProcessor()(torch.from_numpy(x).permute(2, 0, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DeiTImageProcessor()(x, do_rescale=False); DeiTImageProcessor()((x * 255).astype(np.uint8)); DeiTImageProcessor()(np.round(x * 255))

@pytest.mark.parametrize("make", [lambda: np.ones((8, 8, 3), bool), lambda: torch.ones(3, 8, 8, dtype=torch.bool)], ids=["numpy", "torch"])
def test_bool_arrays_are_rejected(make):
    "3: True is not a colour: the caller says what it means"
    with pytest.raises(TypeError, match="got dtype bool: say what True means"): DeiTImageProcessor()(make())

@pytest.mark.parametrize("std", [0, (0.5, 0.0, 0.5), [0.0]])
def test_zero_std_is_an_error(std):
    "3: a zero in image_std divides by zero: refused when built, read or passed"
    with pytest.raises(ValueError, match="image_std must not hold a 0"): DeiTImageProcessor(image_std=std)
    with pytest.raises(ValueError, match="image_std must not hold a 0"): DeiTImageProcessor()(Image.new("RGB", (8, 8)), image_std=std)

def test_truncated_images_are_errors_that_say_how_to_accept_them(tmp_path, photo_bytes):
    "3: a cut file is an error naming PIL's opt-in; with PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True (the user's choice) it loads, as in transformers"
    (tmp_path/"cut.jpg").write_bytes(photo_bytes[: len(photo_bytes) // 3]); (tmp_path/"ok.jpg").write_bytes(photo_bytes)
    batch = [str(tmp_path/"ok.jpg")] * 3 + [str(tmp_path/"cut.jpg")] + [str(tmp_path/"ok.jpg")] * 3
    with pytest.raises(ValueError, match=r"truncated or corrupt.*set PIL\.ImageFile\.LOAD_TRUNCATED_IMAGES = True"):
        DeiTImageProcessor()(str(tmp_path/"cut.jpg"))
    with pytest.raises(ValueError, match="image 3: .*truncated or corrupt"): DeiTImageProcessor(num_workers=4)(batch)
    with pytest.raises(ValueError, match="truncated or corrupt"): DeiTImageProcessor()(Image.open(tmp_path/"cut.jpg"))
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        one = DeiTImageProcessor()(str(tmp_path/"cut.jpg"), return_tensors="pt").pixel_values
        assert one.shape == (1, 3, 224, 224) and torch.isfinite(one).all()
        assert DeiTImageProcessor(num_workers=4)(batch, return_tensors="pt").pixel_values.shape == (7, 3, 224, 224)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True            # never switched off behind the caller's back
    finally: ImageFile.LOAD_TRUNCATED_IMAGES = False

@pytest.fixture
def photo_bytes():
    from matplotlib import cbook
    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()

# ---- 4. Configs and model inputs ---------------------------------------------------------------------------------

FIELD_KINDS = {  # field -> what is allowed
    "hidden_size": "posint", "num_hidden_layers": "posint", "num_attention_heads": "posint", "intermediate_size": "posint",
    "num_channels": "posint", "encoder_stride": "posint", "pooler_output_size": "posint",
    "qkv_bias": "bool", "use_distillation_token": "bool", "output_attentions": "bool", "output_hidden_states": "bool", "return_dict": "bool",
    "layer_norm_eps": "pos", "initializer_range": "nonneg", "hidden_dropout_prob": "prob", "attention_probs_dropout_prob": "prob",
    "num_labels": "nonnegint", "hidden_act": "str", "pooler_act": "str",
}
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 2000), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=5), st.sampled_from(["false", "true", "0", "1", "768"]), st.lists(st.integers(0, 3), max_size=3))

def allowed(kind, v) -> bool:
    isint = isinstance(v, int) and not isinstance(v, bool)
    isnum = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return {"posint": isint and v > 0, "nonnegint": isint and v >= 0, "bool": isinstance(v, bool), "str": isinstance(v, str),
            "pos": isnum and v > 0, "nonneg": isnum and v >= 0, "prob": isnum and 0 <= v < 1}[kind]

@HYP
@given(field=st.sampled_from(sorted(FIELD_KINDS)), value=VALUES)
def test_config_fields_are_validated(field, value):
    "4 (property): every value of every field is either allowed and kept, or a ValueError that names the field and the value"
    base = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128)
    kw = {**base, field: value}
    if field == "pooler_output_size" and value is None: return            # None means hidden_size
    if field == "num_labels" and value is None: return                    # None means the default, 2
    consistent = not (field == "hidden_size" and allowed("posint", value) and value % 4) and \
                 not (field == "num_attention_heads" and allowed("posint", value) and 64 % value)
    if allowed(FIELD_KINDS[field], value) and consistent:
        c = ds.DeiTConfig(**kw)
        assert (c.num_labels if field == "num_labels" else getattr(c, field)) == value
        assert ds.DeiTConfig.from_dict(json.loads(c.to_json_string())) == c           # and survives config.json
    else:
        with pytest.raises(ValueError) as e: ds.DeiTConfig(**kw)
        assert field in str(e.value) or "hidden size" in str(e.value), str(e.value)

@pytest.mark.parametrize("patch,msg", [({"qkv_bias": "false"}, "qkv_bias must be true or false (a bool), got str 'false'"),
                                       ({"id2label": {"zero": "cat"}}, "id2label key must be a class index"),
                                       ({"id2label": {"0": "cat", "2": "dog"}}, "must number the classes 0..1"),
                                       ({"layer_norm_eps": -1e-12}, "layer_norm_eps must be a finite number > 0"),
                                       ({"image_size": "32"}, "image_size must be a positive integer or a pair of them"),
                                       ({"hidden_dropout_prob": "0.1"}, "hidden_dropout_prob must be a number in [0, 1)")])
def test_bad_config_json_is_named_at_load(tmp_path, patch, msg):
    "4: the same checks on a config.json read from disk, through load_model"
    d = tmp_path/"c"; tiny(0).save_pretrained(d)
    cfg = json.loads((d/"config.json").read_text()); cfg.update(patch)
    if "id2label" in patch: cfg.pop("label2id")
    (d/"config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace(".", r"\.")):
        load_model(d)

def clf(num_labels=5):
    torch.manual_seed(0)
    return ds.DeiTForImageClassification(ds.DeiTConfig(**CFG, num_labels=num_labels)).eval()

@pytest.mark.parametrize("bad,msg", [(torch.rand(2), "multi-label classification needs labels of shape (2, 5)"),
                                     (torch.tensor([0, 9]), "class indices in [0, 5) or -100 (ignored), got [9]"),
                                     (torch.tensor([0, -3]), "got [-3]"),
                                     (torch.ones(2, dtype=torch.bool), "labels of dtype torch.bool"),
                                     (torch.tensor(1), "labels has batch size none (a scalar)"),
                                     (torch.zeros(3, dtype=torch.long), "labels has batch size 3 but the logits have 2"),
                                     (torch.zeros(2, 5, dtype=torch.long).float()[:, :3], "needs labels of shape (2, 5)")])
def test_bad_labels_change_nothing(bad, msg):
    "4: labels are checked before problem_type is inferred: a bad call raises and the next good call works"
    m = clf()
    with pytest.raises((ValueError, TypeError)) as e: m(PX, labels=bad)
    assert msg in str(e.value), str(e.value)
    assert m.config.problem_type is None
    out = m(PX, labels=torch.tensor([1, 4]))
    assert m.config.problem_type == "single_label_classification" and torch.isfinite(out.loss)

@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])
def test_labels_of_any_integer_dtype_are_class_indices(dtype):
    "4: int16 / uint8 labels are class indices, not multi-label targets"
    m = clf(); ref = torch.nn.functional.cross_entropy(m(PX).logits, torch.tensor([1, 4]))
    torch.testing.assert_close(m(PX, labels=torch.tensor([1, 4], dtype=dtype)).loss, ref)

def test_all_ignored_labels_give_zero_loss_and_zero_gradients():
    "4: every label -100: loss 0 (transformers: NaN), and the weights get zero gradients"
    m = clf().train()
    with torch.enable_grad():
        out = m(PX, labels=torch.full((2,), -100)); out.loss.backward()
    assert out.loss.item() == 0.0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in m.parameters())

def test_num_labels_zero_with_labels_and_empty_images_are_errors():
    "4: no head but labels; zero-sized height/width"
    with pytest.raises(ValueError, match=r"num_labels=0 \(an identity head\)"): clf(0)(PX, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"has no pixels \(shape \(2, 3, 0, 32\)\)"): clf()(torch.zeros(2, 3, 0, 32))
    with pytest.raises(ValueError, match=r"has no pixels"): clf()(torch.zeros(2, 3, 0, 0), interpolate_pos_encoding=True)

@pytest.mark.parametrize("mask,err", [(lambda m: m.float() / 2, "must hold only 0 and 1 (or be boolean), got values in [0, 0.5]"),
                                      (lambda m: m.long() * 3, "must hold only 0 and 1 (or be boolean), got values in [0, 3]"),
                                      (lambda m: torch.complex(m.float(), m.float()), "must be boolean (or 0/1 numbers), got dtype torch.complex64"),
                                      (lambda m: m[:, :-1], "must have shape (batch_size, num_patches) = (2, 16), got (2, 15)"),
                                      (lambda m: m.tolist(), "must be a torch.Tensor, got list")])
def test_bool_masked_pos_is_checked(mask, err):
    "4: a float mask (is 0.5 masked?), other integers, a wrong shape, a list"
    torch.manual_seed(0)
    mim = ds.DeiTForMaskedImageModeling(ds.DeiTConfig(**CFG)).eval()
    m = torch.rand(2, 16, generator=torch.Generator().manual_seed(1)) < 0.5
    with pytest.raises((ValueError, TypeError)) as e: mim(PX, bool_masked_pos=mask(m))
    assert err in str(e.value), str(e.value)
    with torch.no_grad():
        for same in (m.long(), m.float()):          # 0/1 integers and 0/1 floats mean the bool mask (floats: as transformers)
            torch.testing.assert_close(mim(PX, bool_masked_pos=same).loss, mim(PX, bool_masked_pos=m).loss, rtol=0, atol=0)

def test_predict_runs_in_eval_and_inference_mode_and_restores_the_mode():
    "4: dropout never changes predict's answer; the caller's training mode comes back, also after an error"
    m = tiny(0, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3).train()
    proc = DeiTImageProcessor(size=40, crop_size=32)
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8))
    a, b = ds.predict(m, proc, im, top_k=3), ds.predict(m, proc, im, top_k=3)
    assert a == b and m.training
    m.eval(); assert ds.predict(m, proc, im, top_k=3) == a and not m.training
    m.train()
    with pytest.raises(ValueError): ds.predict(m, proc, [im, "/nonexistent.jpg"])
    assert m.training

@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "train"])
def test_cli_device_without_cuda_is_one_line(tmp_path, command):
    "4: --device cuda on a machine without CUDA: exit 2, one line, before any work"
    if torch.cuda.is_available(): pytest.skip("this machine has CUDA")
    argv = ["predict", "x.jpg", "--model", "m"] if command == "predict" else ["train", "fashion-mnist", "--output", str(tmp_path/"o")]
    r = subprocess.run([sys.executable, "-m", "deit_scratch.launch", *argv, "--device", "cuda"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "argument --device: 'cuda' is not available" in r.stderr, r.stderr


# ---- a failed save tells the truth ---------------------------------------------------------------------------------

def tree_bytes(d:Path) -> dict:
    "Every entry under `d` with its bytes (None for a directory): what 'nothing was changed' promises"
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}

@pytest.mark.parametrize("victim", ["config.json", PREPROCESSOR_CONFIG, "model.safetensors"])
def test_a_directory_where_a_file_goes_is_refused_before_anything_changes(old_ckpt, victim):
    "1, 2: the file in the way is named, the folder's bytes are unchanged, the old checkpoint still loads, and the advice works"
    d, want, labels = old_ckpt
    (d/victim).unlink(); (d/victim).mkdir(); (d/victim/"keep.txt").write_text("mine")
    before = tree_bytes(d)
    new = tiny(1, labels=("a", "b", "c"))
    with pytest.raises(F.SaveError) as e: new.save_pretrained(d, image_processor=DeiTImageProcessor(crop_size=32, size=40))
    msg = str(e.value)
    assert msg.startswith(f"Could not save into {str(d)!r}: {victim!r} is a directory where the save puts a file; nothing there was changed"), msg
    assert "[Errno" not in msg and e.value.errno == errno.EISDIR and e.value.committed is False
    assert tree_bytes(d) == before
    if victim == PREPROCESSOR_CONFIG:                                        # the previous model still loads, whole
        got = load_model(d); torch.testing.assert_close(logits(got), want, rtol=0, atol=0); assert got.config.id2label == labels
    (d/victim/"keep.txt").unlink(); (d/victim).rmdir()                       # the advice: move it out of the way ...
    new.save_pretrained(d, image_processor=DeiTImageProcessor(crop_size=32, size=40))   # ... and save again
    torch.testing.assert_close(logits(load_model(d)), logits(new), rtol=0, atol=0)

def test_a_failure_after_the_commit_says_so_and_the_next_load_finishes_it(old_ckpt, monkeypatch):
    "1, 2: past the journal, the error says committed (never 'nothing was changed'), names the file; fixed, the load completes the new save"
    d, _, _ = old_ckpt
    new = tiny(1, labels=("a", "b", "c"))
    real = os.replace
    def refuse_config(src, dst):
        if Path(dst).name == "config.json": raise PermissionError(errno.EACCES, "Permission denied", str(src), None, str(dst))
        real(src, dst)
    monkeypatch.setattr(os, "replace", refuse_config)
    with pytest.raises(F.SaveError) as e: new.save_pretrained(d)
    msg = str(e.value)
    assert e.value.committed is True and "nothing there was changed" not in msg and "[Errno" not in msg
    assert "was committed but not finished ('config.json': Permission denied)" in msg and "load the directory" in msg, msg
    monkeypatch.setattr(os, "replace", real)                                 # the cause fixed
    got = load_model(d)                                                      # completes the save: the new model, whole
    torch.testing.assert_close(logits(got), logits(new), rtol=0, atol=0)
    assert got.config.id2label == {0: "a", 1: "b", 2: "c"} and F.JOURNAL not in entries(d)

def test_an_interrupted_save_that_cannot_finish_names_the_file_in_the_way(old_ckpt):
    "2: a committed journal whose target became a directory: the load's advice names it, and following it works"
    d, _, _ = old_ckpt
    stage = d/".deit-scratch-tmp-0123456789abcdef"; stage.mkdir(); (stage/"config.json").write_bytes((d/"config.json").read_bytes())
    (d/F.JOURNAL).write_text(json.dumps({"rename": [[f"{stage.name}/config.json", "config.json"]], "remove": []}))
    (d/"config.json").unlink(); (d/"config.json").mkdir(); (d/"config.json"/"x").write_text("x")
    with pytest.raises(ValueError, match=r"cannot be completed \('config.json': .*To complete it, 'config.json' is a directory where the save puts a file: move it out of"):
        load_model(d)
    (d/"config.json"/"x").unlink(); (d/"config.json").rmdir()
    load_model(d); assert entries(d) == ["config.json", "model.safetensors", PREPROCESSOR_CONFIG]

def test_a_bad_dtype_is_named():
    "3: dtype='bogus' and integer dtypes: a ValueError saying what is expected (transformers: ValueError too)"
    import tempfile
    with tempfile.TemporaryDirectory() as t:
        tiny(0).save_pretrained(t)
        for bad in ("bogus", torch.int8, "int64", 3):
            with pytest.raises(ValueError, match=r"dtype must be a floating-point torch.dtype, its name \(e.g. 'bfloat16', 'float16'\) or 'auto', got"):
                load_model(t, dtype=bad)
        assert load_model(t, dtype="torch.bfloat16").dtype == torch.bfloat16 and load_model(t, dtype="auto").dtype == torch.float32

def test_a_stray_tensor_is_named_and_ignored_as_transformers_does(tmp_path):
    "3: a key no DeiT has (in a layer beyond the model's) loads with a warning naming it; a whole extra layer stays an error"
    m = tiny(0); m.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path/"model.safetensors"))
    save_file({**sd, "deit.encoder.layer.7.extra.weight": torch.ones(3)}, str(tmp_path/"model.safetensors"), metadata={"format": "pt"})
    with pytest.warns(UserWarning, match=r"Not used: \['deit\.layers\.7\.extra\.weight'\] is in the checkpoint but no part of"):
        got = load_model(tmp_path)
    torch.testing.assert_close(logits(got), logits(m), rtol=0, atol=0)
    extra = {k.replace("layer.1.", "layer.2."): v.clone() for k, v in sd.items() if ".layer.1." in k}
    save_file({**sd, **extra}, str(tmp_path/"model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="num_hidden_layers is 3 in the checkpoint, 2 in the config"): load_model(tmp_path)

def test_regression_labels_of_the_wrong_shape_say_regression():
    "3: a 2-output regression with labels of shape (2,): the regression message, not the multi-label one"
    reg = ds.DeiTForImageClassification(ds.DeiTConfig(**{**CFG, "num_labels": 2}, problem_type="regression"))
    with pytest.raises(ValueError, match=r"^regression needs labels of shape \(2, 2\) \(one target per output\), got \(2,\)$"):
        reg(PX, labels=torch.rand(2))
