#!/usr/bin/env python
"""DeiT's distillation ablation (the paper's Table 3) in miniature, on Fashion-MNIST, on a CPU.

One teacher (notebook 13's ResNet, with its recipe) and one DeiT student architecture (width 96, 6 blocks, 3 heads, 4 px patches),
trained with one fixed budget on a class-balanced subset of the training set, with no distillation, soft and hard
distillation, over several seeds; every model is evaluated on all 10,000 test images. Writes a JSON file with every
run, and prints the Markdown table (mean ± sample std over seeds) that benchmarks/RESULTS.md and notebook 14 show.

    .venv/bin/python benchmarks/distillation_ablation.py                       # the committed run (about an hour on 2 cores)
    .venv/bin/python benchmarks/distillation_ablation.py --n 1000 --epochs 1 --seeds 0 --out /tmp/smoke.json   # smoke test

Runs execute in `--workers` processes of one thread each (on 2 cores, two one-thread runs side by side get more done
than one two-thread run: these matrices are small).
"""
import argparse, json, multiprocessing, os, platform, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

def machine() -> str:
    import torch
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"

def run_one(job:dict) -> dict:
    import torch, torch.nn.functional as F
    torch.set_num_threads(job["threads"])
    from deit_scratch.data import fashion_mnist, eval_transform
    from deit_scratch.heads import DeiTForImageClassification, DeiTForImageClassificationWithTeacher
    from deit_scratch.training import (fashion_student_config, init_for_training, evaluate, ConvNet, save_convnet, load_convnet,
                                       TEACHER_RECIPE, teacher_transform, STUDENT_RECIPE, student_transform)
    from deit_scratch.distillation import train
    train_ds = fashion_mnist("train", transform=teacher_transform() if job["kind"] == "teacher" else student_transform(), n=job["n"])
    test_ds = fashion_mnist("test", transform=eval_transform())
    torch.manual_seed(job["seed"])
    t0 = time.perf_counter()
    if job["kind"] == "teacher":
        tr = train(ConvNet(), train_ds, None, **{**TEACHER_RECIPE, "epochs": job["teacher_epochs"]}, seed=job["seed"], progress=False)
        save_convnet(tr.model.eval(), job["teacher_dir"])
        m = evaluate(tr.model, test_ds)
        return {"kind": "teacher", "seed": job["seed"], "acc": m["acc_logits"], "params": sum(p.numel() for p in tr.model.parameters()),
                "wall_s": time.perf_counter() - t0, "images_per_s": sum(r["images_per_s"] for r in tr.history) / len(tr.history)}
    kind = job["kind"]
    cls = DeiTForImageClassification if kind == "none" else DeiTForImageClassificationWithTeacher
    model = init_for_training(cls(fashion_student_config()))
    teacher = load_convnet(job["teacher_dir"]) if kind != "none" else None
    tr = train(model, train_ds, None, teacher=teacher, distillation_type=kind, seed=job["seed"], progress=False,
               **{**STUDENT_RECIPE, "epochs": job["epochs"]})
    res = {"distillation": kind, "seed": job["seed"], "wall_s": time.perf_counter() - t0,
           "images_per_s": sum(r["images_per_s"] for r in tr.history) / len(tr.history),
           "final_train_loss": tr.history[-1]["train_loss"]}
    res.update(evaluate(tr.model, test_ds)); res.update({f"ema_{k}": v for k, v in evaluate(tr.ema.module, test_ds).items()})
    if kind != "none":
        with torch.no_grad():
            tr.model.eval()
            x = torch.stack([test_ds[i][0] for i in range(1000)])
            o = tr.model.deit(x, output_hidden_states=True)
            res["cos_in"] = F.cosine_similarity(o.hidden_states[0][:, 0], o.hidden_states[0][:, 1], dim=-1).mean().item()
            res["cos_out"] = F.cosine_similarity(o.last_hidden_state[:, 0], o.last_hidden_state[:, 1], dim=-1).mean().item()
            e = tr.model.deit.embeddings
            res["cos_tokens"] = F.cosine_similarity(e.cls_token.flatten(), e.distillation_token.flatten(), dim=0).item()
    print(f"  {kind:>5} seed {job['seed']}: " + " ".join(f"{k} {v:.4f}" for k, v in res.items() if "acc" in k)
          + f" ({res['wall_s']:.0f} s)", flush=True)
    return res

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="training images (class-balanced subset)")
    ap.add_argument("--epochs", type=int, default=8, help="student epochs (the rest of the recipe: deit_scratch.training.STUDENT_RECIPE)")
    ap.add_argument("--teacher-epochs", type=int, default=15, help="teacher epochs (its recipe: deit_scratch.training.TEACHER_RECIPE)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--kinds", nargs="+", default=["none", "soft", "hard"])
    ap.add_argument("--workers", type=int, default=2, help="runs side by side, one thread each")
    ap.add_argument("--teacher-dir", default=None, help="reuse (or write) the teacher here; default: a fresh one next to --out")
    ap.add_argument("--out", default=str(Path(__file__).with_name("distillation_ablation.json")))
    a = ap.parse_args()
    out = Path(a.out)
    teacher_dir = Path(a.teacher_dir) if a.teacher_dir else out.with_suffix("").with_name(out.stem + "_teacher")
    base = dict(n=a.n, epochs=a.epochs, teacher_epochs=a.teacher_epochs, teacher_dir=str(teacher_dir),
                threads=1 if a.workers > 1 else os.cpu_count())
    t0 = time.perf_counter()
    print(f"machine: {machine()}", flush=True)
    if (teacher_dir/"model.safetensors").is_file() and a.teacher_dir:
        from deit_scratch.training import load_convnet, evaluate
        from deit_scratch.data import fashion_mnist, eval_transform
        t = load_convnet(teacher_dir)
        teacher = {"kind": "teacher", "acc": evaluate(t, fashion_mnist("test", transform=eval_transform()))["acc_logits"],
                   "params": sum(p.numel() for p in t.parameters()), "reused": str(teacher_dir)}
    else:
        teacher = run_one({**base, "kind": "teacher", "seed": 0, "threads": os.cpu_count()})
    print(f"teacher: {teacher['acc']:.4f}", flush=True)
    jobs = [{**base, "kind": k, "seed": s} for s in a.seeds for k in a.kinds]
    # spawn, not fork: the teacher was trained in this process (torch's thread pools, inductor's compile workers), and a
    # forked child can inherit one of their locks held and wait forever
    with ProcessPoolExecutor(a.workers, mp_context=multiprocessing.get_context("spawn")) as ex: runs = list(ex.map(run_one, jobs))
    from deit_scratch.training import STUDENT_RECIPE
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "wall_s": time.perf_counter() - t0,
           "budget": {"train_images": a.n, "student_epochs": a.epochs, "teacher_epochs": a.teacher_epochs, "student_recipe": STUDENT_RECIPE,
                      "workers": a.workers, "threads_per_run": base["threads"]},
           "teacher": teacher, "runs": runs}
    out.write_text(json.dumps(res, indent=1) + "\n")
    from deit_scratch.distillation import ablation_table
    print(ablation_table(res))
    print(f"total wall time {res['wall_s'] / 60:.1f} min; written to {out}")

if __name__ == "__main__":
    main()
