#!/usr/bin/env python
"""DeiT's distillation ablation (the paper's Tables 3 and 4) in miniature, on Fashion-MNIST, on a CPU.

One ConvNet teacher (notebook 13's ResNet and recipe) and one DeiT student architecture, trained with one fixed budget
on a class-balanced subset of the training set, with each method over several seeds:

- `none`: `DeiTForImageClassification`, labels only;
- `soft`: the paper's soft distillation, τ = 3, λ = 0.1 (facebookresearch's loss, KL summed and divided by B·K);
- `soft-t1`: the code's defaults, τ = 1, α = 0.5 (an extra row, not run by default);
- `none-mix`, `hard-mix`: `none` and `hard` with mixup or cutmix on every batch, as DeiT's recipe (extra rows, one seed);
- `hard`: ½ CE(labels) on the class token's head + ½ CE(the teacher's argmax) on the distillation token's head;
- `two-cls`: the control: a second class token and head trained on the labels, no teacher.

Every model is evaluated on all 10,000 test images: accuracy of each head, the two fusions (the mean of the logits, as
transformers does, and the sum of the softmaxes, as the paper does), disagreement with the teacher (Table 4) and the
cosine of the two tokens at the encoder's input and output. Each epoch's accuracy on 2,000 test images is kept too
(the learning curves). Writes `distillation_ablation.json` and prints the Markdown tables of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/distillation_ablation.py            # the committed table (see RESULTS.md for its time)
    .venv/bin/python benchmarks/distillation_ablation.py --n 500 --epochs 1 --seeds 0 --runs-dir /tmp/smoke   # smoke test

**Resumable.** Each finished run is a JSON file in `--runs-dir`, and a run in progress checkpoints every epoch there:
run the same command again after a stop and it goes on where it was. Runs execute in `--workers` processes of one
thread each (on 2 cores, two one-thread runs side by side do more than one two-thread run: the matrices are small).

**The course model.** At the end the best `hard` student (highest test accuracy of the averaged heads) and the teacher
are copied, in transformers' format with their `preprocessor_config.json`, to `--models-dir` (`models/` at the top of
the repository), and the student is checked with transformers' own `DeiTForImageClassificationWithTeacher`.
"""
import argparse, json, multiprocessing, os, platform, shutil, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the student and its recipe (TrainConfig fields on top of the defaults); the teacher's is deit_scratch.training.TEACHER_RECIPE
STUDENT = dict(hidden_size=96, num_hidden_layers=6, num_attention_heads=3, intermediate_size=384, patch_size=7)
RECIPE = dict(batch_size=128, lr=1e-3, mix_prob=0.0, ema_decay=None, label_smoothing=0.1, warmup_epochs=1.0)
AUGMENT = dict(padding=2, flip=True, trivial_augment=False, erasing=0.0)    # deit_scratch.data.train_transform arguments
METHODS = {"none": dict(distillation_type="none"), "soft": dict(distillation_type="soft", tau=3.0, alpha=0.1),
           "soft-t1": dict(distillation_type="soft", tau=1.0, alpha=0.5), "hard": dict(distillation_type="hard", alpha=0.5),
           "two-cls": dict(distillation_type="two-cls"),
           # DeiT's own recipe adds mixup and cutmix to every batch: the teacher's label of a mixed image is then
           # information the labels lack; extra rows (one seed by default) that try it
           "none-mix": dict(distillation_type="none", recipe=dict(mix_prob=1.0)),
           "hard-mix": dict(distillation_type="hard", alpha=0.5, recipe=dict(mix_prob=1.0))}
CORE = ("none", "hard", "two-cls", "soft")                                  # the rows the issue asks for; the others are extras

def machine() -> str:
    import torch
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    flags = open("/proc/cpuinfo").read()
    return (f"{cpu}, {os.cpu_count()} cores{', AMX' if 'amx_bf16' in flags else ''}, torch {torch.__version__}, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}")

def write_json(path:Path, obj):
    "Write `obj` to `path` through a temporary file and a rename: a stop leaves the old file or the new one"
    tmp = path.with_name(path.name + ".tmp"); tmp.write_text(json.dumps(obj, indent=1) + "\n"); os.replace(tmp, path)

def test_outputs(model, x, batch:int=500) -> dict:
    "Each head's logits and the two tokens at the encoder's input and output, over the test images `x`"
    import torch
    from deit_scratch.training import head_logits
    model.eval(); outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            inner = getattr(model, "deit", None)
            if inner is None: outs.append({"logits": model(x[i:i + batch]).logits}); continue
            o = inner(x[i:i + batch], output_hidden_states=True)
            heads = head_logits(model(x[i:i + batch]))
            heads.update(tok_in=o.hidden_states[0][:, :2], tok_out=o.last_hidden_state[:, :2])
            outs.append(heads)
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

def run_one(job:dict) -> dict:
    import torch, torch.nn.functional as F
    torch.set_num_threads(job["threads"])
    from deit_scratch.data import fashion_mnist, eval_transform, train_transform
    from deit_scratch.heads import DeiTForImageClassification, DeiTForImageClassificationWithTeacher
    from deit_scratch.training import fashion_student_config, init_for_training, load_convnet, evaluate
    from deit_scratch.distillation import train
    from deit_scratch.launch import student_processor
    method, seed, out = job["method"], job["seed"], Path(job["dir"])
    test = fashion_mnist("test", transform=eval_transform())
    x = torch.stack([test[i][0] for i in range(len(test))]); y = torch.tensor([int(test[i][1]) for i in range(len(test))])
    teacher = load_convnet(job["teacher_dir"])
    with torch.no_grad(): t_pred = torch.cat([teacher(x[i:i + 1000]).argmax(-1) for i in range(0, len(x), 1000)])
    config = fashion_student_config(**STUDENT)
    spec = dict(METHODS[method]); recipe = {**RECIPE, **spec.pop("recipe", {})}
    plain = spec["distillation_type"] == "none"                     # no second token: DeiTForImageClassification
    torch.manual_seed(seed)
    model = init_for_training((DeiTForImageClassification if plain else DeiTForImageClassificationWithTeacher)(config))
    t0 = time.perf_counter()
    tr = train(model, fashion_mnist("train", transform=train_transform(**AUGMENT), n=job["n"]),
               fashion_mnist("test", transform=eval_transform(), n=2000),
               teacher=teacher if spec["distillation_type"] in ("soft", "hard") else None, seed=seed, progress=False,
               output_dir=out, image_processor=student_processor(config), resume=(out/"checkpoint.pt").is_file(),
               **spec, **{**recipe, "epochs": job["epochs"]})
    wall = time.perf_counter() - t0
    o = test_outputs(tr.model, x)
    acc = lambda logits: (logits.argmax(-1) == y).float().mean().item()
    dis = lambda logits: (logits.argmax(-1) != t_pred).float().mean().item()
    res = {"method": method, "seed": seed, "epochs": job["epochs"], "train_images": job["n"], "recipe": recipe,
           "wall_s": wall, "train_time_s": sum(r["train_time"] for r in tr.history),   # wall_s: this invocation's only, if resumed
           "images_per_s": sum(r["images_per_s"] for r in tr.history) / len(tr.history), "compiled": tr.compiled, "amp": str(tr.amp)}
    if "logits" in o:
        res.update(acc=acc(o["logits"]), disagree_teacher=dis(o["logits"]))
    else:
        fused = o["cls"].softmax(-1) + o["distillation"].softmax(-1)
        res.update(acc=acc(o["cls"]) if method == "two-cls" else acc(o["average"]), acc_cls=acc(o["cls"]), acc_dist=acc(o["distillation"]),
                   acc_average_logits=acc(o["average"]), acc_sum_softmax=acc(fused),
                   fusion_disagreement=(o["average"].argmax(-1) != fused.argmax(-1)).float().mean().item(),
                   disagree_teacher=dis(o["average"]), disagree_teacher_cls=dis(o["cls"]), disagree_teacher_dist=dis(o["distillation"]),
                   disagree_cls_dist=(o["cls"].argmax(-1) != o["distillation"].argmax(-1)).float().mean().item(),
                   cos_in=F.cosine_similarity(o["tok_in"][:, 0], o["tok_in"][:, 1], dim=-1).mean().item(),
                   cos_out=F.cosine_similarity(o["tok_out"][:, 0], o["tok_out"][:, 1], dim=-1).mean().item())
    res["curve"] = [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()
                     if k in ("epoch", "train_loss", "train_acc", "images_per_s") or k.startswith("valid_acc")} for r in tr.history]
    print(f"  {method:>7} seed {seed}: acc {res['acc']:.4f}" + (f" (cls {res['acc_cls']:.4f}, dist {res['acc_dist']:.4f})" if "acc_cls" in res else "")
          + f", {wall / 60:.1f} min, {res['images_per_s']:.0f} img/s", flush=True)
    return res

def train_teacher(a, teacher_dir:Path) -> dict:
    import torch
    from deit_scratch.data import fashion_mnist, eval_transform
    from deit_scratch.training import ConvNet, save_convnet, evaluate, TEACHER_RECIPE, teacher_transform
    from deit_scratch.distillation import train
    t0 = time.perf_counter(); torch.manual_seed(0)
    tr = train(ConvNet(), fashion_mnist("train", transform=teacher_transform(), n=a.n), None, seed=0, progress=False,
               **{**TEACHER_RECIPE, "epochs": a.teacher_epochs})
    save_convnet(tr.model.eval(), teacher_dir)
    return {"wall_s": time.perf_counter() - t0, "epochs": a.teacher_epochs, "recipe": TEACHER_RECIPE,
            "images_per_s": sum(r["images_per_s"] for r in tr.history) / len(tr.history)}

def write_examples(directory:Path, per_class:int=2):
    "The first `per_class` test images of each class as PNG files named `<test index>-<class>.png` (notebook 11 reads them)"
    from PIL import Image
    from deit_scratch.data import load_fashion_mnist, FASHION_MNIST_CLASSES
    x, y = load_fashion_mnist("test")
    tmp = directory.with_name(directory.name + ".tmp"); shutil.rmtree(tmp, ignore_errors=True); tmp.mkdir(parents=True)
    for c, name in enumerate(FASHION_MNIST_CLASSES):
        for i in (y == c).nonzero()[:per_class, 0].tolist():
            Image.fromarray(x[i].numpy()).save(tmp/f"{i:05d}-{name.replace('/', '-').replace(' ', '-').lower()}.png")
    if directory.exists(): shutil.rmtree(directory)
    os.replace(tmp, directory)

def export_course_model(res:dict, runs_dir:Path, teacher_dir:Path, models_dir:Path) -> dict:
    "Copy the best hard student and the teacher to `models_dir`, and check the student with transformers"
    import torch
    from deit_scratch.data import fashion_mnist, eval_transform
    from deit_scratch.training import fashion_student_config
    from deit_scratch.launch import student_processor
    best = max((r for r in res["runs"] if r["method"] == "hard"), key=lambda r: r["acc"])
    student, teacher = models_dir/"fashion-mnist-deit-distilled", models_dir/"fashion-mnist-convnet-teacher"
    for src, dst in ((runs_dir/f"hard-seed{best['seed']}"/"model", student), (teacher_dir, teacher)):
        tmp = dst.with_name(dst.name + ".tmp"); shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.tmp", ".*"))
        if dst.exists(): shutil.rmtree(dst)
        os.replace(tmp, dst)
    student_processor(fashion_student_config(**STUDENT)).save_pretrained(teacher)
    write_examples(models_dir/"fashion-mnist-examples")
    import transformers
    test = fashion_mnist("test", transform=eval_transform())
    x = torch.stack([test[i][0] for i in range(len(test))]); y = torch.tensor([int(test[i][1]) for i in range(len(test))])
    hf = transformers.DeiTForImageClassificationWithTeacher.from_pretrained(student).eval()
    with torch.no_grad(): pred = torch.cat([hf(pixel_values=x[i:i + 500]).logits.argmax(-1) for i in range(0, len(x), 500)])
    hf_acc = (pred == y).float().mean().item()
    size = sum(f.stat().st_size for d in (student, teacher) for f in d.iterdir())
    return {"path": str(student.relative_to(ROOT)) if student.is_relative_to(ROOT) else str(student), "seed": best["seed"],
            "test_acc": hf_acc, "test_acc_ours": best["acc"], "transformers": transformers.__version__,
            "teacher_path": str(teacher.relative_to(ROOT)) if teacher.is_relative_to(ROOT) else str(teacher),
            "teacher_test_acc": res["teacher"]["acc"], "bytes": size}

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="training images (class-balanced subset)")
    ap.add_argument("--epochs", type=int, default=40, help="student epochs (the recipe: RECIPE above)")
    ap.add_argument("--teacher-epochs", type=int, default=15, help="teacher epochs (its recipe: deit_scratch.training.TEACHER_RECIPE)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["none", "hard", "two-cls", "soft", "none-mix", "hard-mix"], choices=list(METHODS))
    ap.add_argument("--extra-seeds", type=int, nargs="+", default=[0], help="seeds of the methods beyond the four of the table")
    ap.add_argument("--workers", type=int, default=2, help="runs side by side, one thread each")
    ap.add_argument("--runs-dir", default=str(ROOT/"benchmarks"/"distillation_ablation_runs"),
                    help="one JSON per finished run, checkpoints of runs in progress, the teacher")
    ap.add_argument("--models-dir", default=str(ROOT/"models"), help="where the course model goes (nothing written if empty string)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("distillation_ablation.json")))
    a = ap.parse_args()
    runs_dir, out = Path(a.runs_dir), Path(a.out); runs_dir.mkdir(parents=True, exist_ok=True)
    budget = {"train_images": a.n, "student_epochs": a.epochs, "teacher_epochs": a.teacher_epochs, "student": STUDENT,
              "recipe": RECIPE, "augment": AUGMENT, "workers": a.workers, "threads_per_run": 1 if a.workers > 1 else os.cpu_count()}
    if (bf := runs_dir/"budget.json").is_file() and json.loads(bf.read_text()) != json.loads(json.dumps(budget)):
        raise SystemExit(f"{runs_dir} holds runs of another budget ({bf}): pass another --runs-dir, or remove it to start again")
    write_json(runs_dir/"budget.json", budget)
    print(f"machine: {machine()}", flush=True)
    import torch
    from deit_scratch.data import fashion_mnist, eval_transform
    from deit_scratch.training import load_convnet, evaluate
    teacher_dir = runs_dir/"teacher"
    if not (runs_dir/"teacher.json").is_file():
        write_json(runs_dir/"teacher.json", train_teacher(a, teacher_dir))
    teacher = json.loads((runs_dir/"teacher.json").read_text())
    teacher["acc"] = evaluate(load_convnet(teacher_dir), fashion_mnist("test", transform=eval_transform()))["acc_logits"]
    print(f"teacher: {teacher['acc']:.4f}", flush=True)
    base = dict(n=a.n, epochs=a.epochs, teacher_dir=str(teacher_dir), threads=budget["threads_per_run"])
    # seed by seed through the four methods of the table, then the extra rows (a stopped table has whole seeds first)
    order = [(m, s) for s in a.seeds for m in a.methods if m in CORE] + [(m, s) for s in a.extra_seeds for m in a.methods if m not in CORE]
    jobs = [{**base, "method": m, "seed": s, "dir": str(runs_dir/f"{m}-seed{s}")} for m, s in order]
    todo = [j for j in jobs if not Path(j["dir"] + ".json").is_file()]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs done already; {len(todo)} to go", flush=True)
    t0 = time.perf_counter()
    # spawn, not fork: this process has run torch (its thread pools, inductor's compile workers), and a forked child can
    # inherit one of their locks held and wait on it forever
    with ProcessPoolExecutor(a.workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        for f in as_completed([ex.submit(run_one, j) for j in todo]):
            r = f.result(); write_json(Path(runs_dir/f"{r['method']}-seed{r['seed']}.json"), r)
    # every finished run in the folder, also those of earlier invocations with other --methods or --seeds
    runs = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*-seed*.json"))]
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "budget": budget, "teacher": teacher,
           "wall_s_this_session": time.perf_counter() - t0, "wall_s_runs": sum(r["wall_s"] for r in runs) / max(a.workers, 1),
           "runs": runs}
    if a.models_dir and any(r["method"] == "hard" for r in runs):
        res["course_model"] = export_course_model(res, runs_dir, teacher_dir, Path(a.models_dir))
        print(f"course model: {res['course_model']}", flush=True)
    write_json(out, res)
    from deit_scratch.distillation import ablation_table, agreement_table
    print(ablation_table(res)); print(); print(agreement_table(res))
    print(f"written to {out}")

if __name__ == "__main__":
    main()
