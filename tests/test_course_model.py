"""The committed course model (issue 20): the best hard-distilled Fashion-MNIST student and its ConvNet teacher, in
`models/`, made by `benchmarks/distillation_ablation.py`. transformers must load the student and reproduce the test
accuracy the results file records; our implementation must give transformers' logits; the files stay small."""
import json
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = json.loads((ROOT/"benchmarks"/"distillation_ablation.json").read_text())
COURSE = RESULTS["course_model"]

@pytest.fixture(scope="module")
def test_set():
    from deit_scratch.data import fashion_mnist, eval_transform
    ds = fashion_mnist("test", transform=eval_transform())
    return torch.stack([ds[i][0] for i in range(len(ds))]), ds.labels

def batched(f, x, n=500):
    with torch.no_grad(): return torch.cat([f(x[i:i + n]) for i in range(0, len(x), n)])

def allowed_change(logits:torch.Tensor, delta:float) -> float:
    """The most test accuracy can move when every logit moves by at most `delta`: the share of images whose top two logits
    are closer than 2·delta (only those can change their argmax)"""
    top2 = logits.topk(2, dim=-1).values
    return ((top2[:, 0] - top2[:, 1]) < 2 * delta).float().mean().item()

def test_results_file_names_the_course_model():
    for k in ("path", "test_acc", "teacher_path", "teacher_test_acc"): assert k in COURSE, f"course_model lacks {k!r}"
    hard = [r for r in RESULTS["runs"] if r["method"] == "hard"]
    assert COURSE["test_acc_ours"] == max(r["acc"] for r in hard), "the course model is the best hard student"
    for d in (COURSE["path"], COURSE["teacher_path"]):
        assert not Path(d).is_absolute(), f"{d}: the paths are relative to the repository"
        for f in ("config.json", "model.safetensors", "preprocessor_config.json"): assert (ROOT/d/f).is_file(), f"{d}/{f} missing"
    size = sum(f.stat().st_size for d in (COURSE["path"], COURSE["teacher_path"]) for f in (ROOT/d).iterdir())
    assert size <= 10 * 2**20, f"the course models take {size / 2**20:.1f} MiB (at most 10 MiB)"

def test_student_reproduces_its_accuracy_in_transformers(test_set):
    import transformers                                   # a dev dependency (settings.ini): no skip
    from deit_scratch.heads import DeiTForImageClassificationWithTeacher
    x, y = test_set
    hf = transformers.DeiTForImageClassificationWithTeacher.from_pretrained(ROOT/COURSE["path"]).eval()
    ours = DeiTForImageClassificationWithTeacher.from_pretrained(ROOT/COURSE["path"]).eval()
    ref, got = batched(lambda b: hf(pixel_values=b).logits, x), batched(lambda b: ours(b).logits, x)
    # fp32 through 6 blocks of width 96: the two implementations differ by rounding only (tests/README.md: 1e-5)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    acc = (ref.argmax(-1) == y).float().mean().item()
    # another CPU's kernels round differently: the accuracy may differ only through images whose top two logits are
    # within the rounding bound of each other (1e-5 per logit, the parity bound above)
    assert abs(acc - COURSE["test_acc"]) <= allowed_change(ref, 1e-5) + 1e-9, (acc, COURSE["test_acc"])

def test_teacher_reproduces_its_accuracy(test_set):
    from deit_scratch.training import load_convnet
    x, y = test_set
    logits = batched(load_convnet(ROOT/COURSE["teacher_path"]), x)
    acc = (logits.argmax(-1) == y).float().mean().item()
    assert abs(acc - COURSE["teacher_test_acc"]) <= allowed_change(logits, 1e-4) + 1e-9, (acc, COURSE["teacher_test_acc"])

def test_allowed_change_counts_close_calls():
    logits = torch.tensor([[1.0, 0.99999, 0.0], [2.0, 0.0, 0.0]])
    assert allowed_change(logits, 1e-5) == 0.5 and allowed_change(logits, 1e-7) == 0.0
