"""Fine-tuning a pretrained DeiT student on new classes, with and without a teacher, through `deit-scratch train`.

    .venv/bin/python benchmarks/finetune_distillation.py            # ~35 min on 2 CPU cores; writes finetune_distillation.json

1. Pretrain the Fashion-MNIST student (notebook 13's, 28 px) on classes 0-4 (1,000 training images per class, 8 epochs), from
   the command line: `deit-scratch train OLD5 --model fashion-student`.
2. Train a teacher (notebook 13's ResNet) on 2,000 images per class of classes 5-9, at 32 px.
3. Fine-tune the pretrained student on classes 5-9 from 100 images per class at 32 px (position table resampled
   7x7 -> 8x8, heads new), with `--teacher` (hard distillation) and without, for several seeds.
4. Evaluate every fine-tuned student (and its EMA) on the 5,000 test images of classes 5-9.
The work folder (images written as PNG, runs) is benchmarks/finetune_work/ (git-ignored).
"""
import argparse, json, platform, sys, time
from pathlib import Path
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from deit_scratch.launch import main, FitInput
from deit_scratch.data import load_fashion_mnist, FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD, TensorDataset, Compose, Normalize, RandomCrop, RandomHorizontalFlip
from deit_scratch.training import ConvNet, Trainer, TrainConfig, TEACHER_RECIPE, save_convnet, evaluate
from deit_scratch.pretrained import load_model

OLD, NEW = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)

def name(c): return FASHION_MNIST_CLASSES[c].replace("/", "-")

def write_folder(dst:Path, x, y, classes, per_class):
    "PNG files dst/<class>/<i>.png: the first `per_class` images of each class"
    if dst.exists(): return
    for c in classes:
        (dst/name(c)).mkdir(parents=True)
        for k, i in enumerate(torch.nonzero(y == c)[:per_class, 0].tolist()):
            Image.fromarray(x[i].numpy()).save(dst/name(c)/f"{k:04d}.png")

def folder_order(classes): return {c: i for i, c in enumerate(sorted(classes, key=name))}   # ImageFolder sorts by name

def run(argv):
    print("$ deit-scratch " + " ".join(map(str, argv)), flush=True)
    code = main([str(a) for a in argv])
    if code: raise SystemExit(f"deit-scratch failed with exit code {code}")

def test_set(x, y, classes, size):
    "The test images of `classes` as a TensorDataset with the folder's label order, fitted to `size`"
    keep = torch.isin(y, torch.tensor(classes))
    order = folder_order(classes)
    return TensorDataset(x[keep], torch.tensor([order[int(c)] for c in y[keep]]), Compose(FitInput(size, 1), Normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD)))

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--crop-scale", type=float, default=0.35)
    ap.add_argument("--ema-decay", type=float, default=0.99)
    ap.add_argument("--work", default=str(ROOT/"benchmarks"/"finetune_work"))
    ap.add_argument("--out", default=str(ROOT/"benchmarks"/"finetune_distillation.json"))
    a = ap.parse_args()
    work = Path(a.work); t_start = time.time()
    xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
    write_folder(work/"old5_train", xtr, ytr, OLD, 1000); write_folder(work/"old5_val", xte, yte, OLD, 100)
    # the fine-tuning images: the *last* per_class images of each new class (the teacher trains on the first 2,000)
    write_folder(work/"new5_train", xtr.flip(0), ytr.flip(0), NEW, a.per_class); write_folder(work/"new5_val", xte, yte, NEW, 100)

    # 1. pretraining on the five old classes
    pre = work/"pretrain"
    if not (pre/"model"/"config.json").is_file():
        run(["train", work/"old5_train", "--val", work/"old5_val", "--output", pre, "--model", "fashion-student",
             "--epochs", a.pretrain_epochs, "--crop-scale", a.crop_scale, "--no-progress", "--force"])
    pretrain_acc = evaluate(load_model(pre/"model"), test_set(xte, yte, OLD, 28))["acc_logits"]
    print(f"pretrained student, 5 old classes, test: {pretrain_acc:.4f}", flush=True)

    # 2. the teacher, on 2,000 images per new class, at 32 px, labels in the folder's order
    tdir = work/"teacher"
    if not (tdir/"config.json").is_file():
        keep = torch.cat([torch.nonzero(ytr == c)[:2000, 0] for c in NEW]).sort().values
        order = folder_order(NEW)
        tds = TensorDataset(xtr[keep], torch.tensor([order[int(c)] for c in ytr[keep]]),
                            Compose(RandomCrop(2), RandomHorizontalFlip(), FitInput(32, 1), Normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD)))
        torch.manual_seed(0)
        tr = Trainer(ConvNet(1, 5), tds, None, TrainConfig(**{**TEACHER_RECIPE, "epochs": 8, "progress": False}))
        tr.fit(); save_convnet(tr.model.eval(), tdir)
    from deit_scratch.training import load_convnet
    teacher_acc = evaluate(load_convnet(tdir), test_set(xte, yte, NEW, 32))["acc_logits"]
    print(f"teacher, 5 new classes, test: {teacher_acc:.4f}", flush=True)

    # 3. fine-tuning, with and without the teacher
    full_test = test_set(xte, yte, NEW, 32)
    runs = []
    for seed in range(a.seeds):
        for kind in ("none", "hard"):
            out = work/f"ft_{kind}_{seed}"
            t0 = time.time()
            run(["train", work/"new5_train", "--val", work/"new5_val", "--output", out, "--model", pre/"model", "--image-size", 32,
                 "--epochs", a.epochs, "--batch-size", 32, "--lr", a.lr, "--crop-scale", a.crop_scale, "--ema-decay", a.ema_decay, "--seed", seed, "--no-progress", "--force"]
                + (["--teacher", tdir, "--distillation", "hard"] if kind == "hard" else []))
            r = {"distillation": kind, "seed": seed, "minutes": (time.time() - t0) / 60}
            r.update(evaluate(load_model(out/"model"), full_test)); r.update({f"ema_{k}": v for k, v in evaluate(load_model(out/"model_ema"), full_test).items()})
            print(json.dumps(r), flush=True); runs.append(r)
            res = {"cpu": f"{platform.processor() or platform.machine()}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads",
                   "pretrain_acc": pretrain_acc, "teacher_acc": teacher_acc,
                   "pretrain": {"classes": [FASHION_MNIST_CLASSES[c] for c in OLD], "images": 5000, "epochs": a.pretrain_epochs, "crop_scale": a.crop_scale},
                   "finetune": {"classes": [FASHION_MNIST_CLASSES[c] for c in NEW], "images": 5 * a.per_class, "epochs": a.epochs, "lr": a.lr,
                                "image_size": 32, "crop_scale": a.crop_scale, "ema_decay": a.ema_decay, "seeds": list(range(a.seeds)), "test_images": len(full_test)},
                   "runs": runs, "total_minutes": (time.time() - t_start) / 60}
            Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"done in {(time.time() - t_start) / 60:.1f} min: {a.out}")
