#!/usr/bin/env python
"""A one-seed probe of the distillation regime (issue 20): learning curves of `none` and `hard` at a longer budget.

Not the ablation table (that is `distillation_ablation.py`, >= 3 seeds per method): one seed, to see whether the
students plateau, where, and whether the teacher's effect shows at that budget, before the table's budget is chosen.
A ConvNet teacher (notebook 13's recipe) is trained first (or reused from --teacher-dir); then the students run side by
side, one thread each. Each epoch's accuracy is measured on 2,000 test images (the curves), the final one on all 10,000.

    .venv/bin/python benchmarks/distillation_probe.py --epochs 40           # ~25 min on 2 cores with AMX
"""
import argparse, json, multiprocessing, os, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

def student(job:dict) -> dict:
    import torch
    torch.set_num_threads(1)
    from deit_scratch.data import fashion_mnist, eval_transform
    from deit_scratch.heads import DeiTForImageClassification, DeiTForImageClassificationWithTeacher
    from deit_scratch.training import fashion_student_config, init_for_training, evaluate, load_convnet, STUDENT_RECIPE, student_transform
    from deit_scratch.distillation import train
    tr = fashion_mnist("train", transform=student_transform(), n=job["n"])
    curve_ds, test = fashion_mnist("test", transform=eval_transform(), n=2000), fashion_mnist("test", transform=eval_transform())
    torch.manual_seed(job["seed"])
    cls = DeiTForImageClassification if job["method"] == "none" else DeiTForImageClassificationWithTeacher
    m = init_for_training(cls(fashion_student_config()))
    teacher = load_convnet(job["teacher_dir"]) if job["method"] in ("soft", "hard") else None
    t0 = time.perf_counter()
    t = train(m, tr, curve_ds, teacher=teacher, distillation_type=job["method"], seed=job["seed"], progress=False,
              **{**STUDENT_RECIPE, "epochs": job["epochs"]})
    final = evaluate(t.model, test)
    curve = [{k: v for k, v in r.items() if "acc" in k or k in ("epoch", "train_loss", "images_per_s")} for r in t.history]
    return {"method": job["method"], "seed": job["seed"], "epochs": job["epochs"], "wall_s": time.perf_counter() - t0,
            "amp": str(t.amp), "compiled": t.compiled, "final_test_10k": final, "curve_test_2k": curve}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=40); ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--methods", nargs="+", default=["none", "hard"])
    ap.add_argument("--teacher-dir", default="/tmp/deit-scratch-probe-teacher")
    ap.add_argument("--out", default=str(Path(__file__).with_name("distillation_probe.json")))
    a = ap.parse_args()
    import torch
    from deit_scratch.data import fashion_mnist, eval_transform
    from deit_scratch.training import ConvNet, evaluate, save_convnet, load_convnet, TEACHER_RECIPE, teacher_transform
    from deit_scratch.distillation import train
    t0 = time.perf_counter()
    td = Path(a.teacher_dir)
    if not (td/"model.safetensors").is_file():
        torch.manual_seed(0)
        tt = train(ConvNet(), fashion_mnist("train", transform=teacher_transform(), n=a.n), None, seed=0, progress=False, **TEACHER_RECIPE)
        save_convnet(tt.model.eval(), td)
    teacher_acc = evaluate(load_convnet(td), fashion_mnist("test", transform=eval_transform()))["acc_logits"]
    print(f"teacher {teacher_acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    jobs = [dict(method=m, seed=a.seed, n=a.n, epochs=a.epochs, teacher_dir=str(td)) for m in a.methods]
    # spawn, not fork: this process has run torch (thread pools, inductor's compile workers) while training the teacher,
    # and a forked child can inherit one of their locks held, and wait on it forever (it happened: 25 min asleep)
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as ex: runs = list(ex.map(student, jobs))
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    doc = {"machine": f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}",
           "date": time.strftime("%Y-%m-%d"), "train_images": a.n, "teacher_recipe": TEACHER_RECIPE, "teacher_test_acc": teacher_acc,
           "wall_s": time.perf_counter() - t0, "runs": runs}
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    for r in runs:
        print(r["method"], {k: round(v, 4) for k, v in r["final_test_10k"].items() if "acc" in k}, f"{r['wall_s'] / 60:.1f} min",
              "curve:", [round(c.get("valid_acc_logits", c.get("valid_acc_average", 0)), 3) for c in r["curve_test_2k"]])
