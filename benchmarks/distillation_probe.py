#!/usr/bin/env python
"""The regime search before the distillation table (issue 20): one-seed learning curves of the `none` student under a few
budgets and recipes, to choose the table's (`distillation_ablation.py`) patch size, epochs and recipe.

Each variant trains the DeiT student (width 96, 6 blocks, 3 heads) with no teacher on a class-balanced subset of
Fashion-MNIST, seed 0, and records its accuracy on 2,000 test images after every epoch, its wall time and img/s.
Variants run side by side, one thread each; finished variants are kept in the JSON file and skipped next time.

    .venv/bin/python benchmarks/distillation_probe.py                      # every variant below (~25 min on 2 cores)
    .venv/bin/python benchmarks/distillation_probe.py --variants p7-b128   # one of them
"""
import argparse, json, multiprocessing, os, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

COURSE = dict(batch_size=32, lr=7e-4, mix_prob=0.3, ema_decay=0.995)              # notebook 13's STUDENT_RECIPE
PLAIN = dict(batch_size=128, lr=1e-3, mix_prob=0.0, ema_decay=None)               # no mixup/cutmix, no EMA
VARIANTS = {  # name: (training images, TrainConfig fields, student_transform arguments, fashion_student_config arguments)
    "p4-course-recipe": (10000, {**COURSE, "epochs": 10}, {}, {}),
    "p4-b128":          (10000, {**PLAIN, "epochs": 10}, {"erasing": 0.0}, {}),
    "p4-60k-2ep":       (60000, {**PLAIN, "epochs": 2}, {"erasing": 0.0}, {}),
    "p7-b128":          (10000, {**PLAIN, "epochs": 10}, {"erasing": 0.0}, {"patch_size": 7}),
    "p7-30ep-lr2e-3":   (10000, {**PLAIN, "epochs": 30, "lr": 2e-3}, {"erasing": 0.0}, {"patch_size": 7}),
    "p7-30ep":          (10000, {**PLAIN, "epochs": 30}, {"erasing": 0.0}, {"patch_size": 7}),
}

def run(name:str) -> dict:
    import torch
    torch.set_num_threads(1)
    from deit_scratch.data import fashion_mnist, eval_transform
    from deit_scratch.heads import DeiTForImageClassification
    from deit_scratch.training import fashion_student_config, init_for_training, student_transform
    from deit_scratch.distillation import train
    n, cfg, tf, arch = VARIANTS[name]
    torch.manual_seed(0)
    m = init_for_training(DeiTForImageClassification(fashion_student_config(**arch)))
    t0 = time.perf_counter()
    t = train(m, fashion_mnist("train", transform=student_transform(**tf), n=n), fashion_mnist("test", transform=eval_transform(), n=2000),
              seed=0, progress=False, **cfg)
    return {"name": name, "train_images": n, "config": cfg, "augment": tf, "student": arch, "wall_s": time.perf_counter() - t0,
            "compiled": t.compiled, "amp": str(t.amp),
            "curve": [{k: round(x, 4) for k, x in r.items() if isinstance(x, float)} for r in t.history]}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).with_name("distillation_probe.json")))
    a = ap.parse_args()
    out = Path(a.out)
    import torch
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    doc = json.loads(out.read_text()) if out.is_file() else {
        "machine": f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}",
        "date": time.strftime("%Y-%m-%d"), "runs": {}}
    todo = [v for v in a.variants if v not in doc["runs"]]
    with ProcessPoolExecutor(a.workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        for f in as_completed([ex.submit(run, v) for v in todo]):
            r = f.result(); doc["runs"][r["name"]] = r
            tmp = out.with_name(out.name + ".tmp"); tmp.write_text(json.dumps(doc, indent=1) + "\n"); os.replace(tmp, out)
    for name, r in doc["runs"].items():
        accs = [c["valid_acc_logits"] for c in r["curve"]]
        print(f"{name:>16}: {len(accs)} epochs, final {accs[-1]:.4f} (best {max(accs):.4f}), {r['wall_s']:.0f} s, "
              f"{sum(c['images_per_s'] for c in r['curve'][1:]) / max(len(r['curve']) - 1, 1):.0f} img/s after the first epoch")
