#!/usr/bin/env python
"""Draw the landing page's picture (nbs/images/course_model.png) from the committed course model: ten Fashion-MNIST
test images it never saw, one per class, each with its prediction and where the class and distillation tokens look
(attention rollout through all blocks).

    .venv/bin/python tools/make_landing_figure.py
"""
from pathlib import Path
import numpy as np
import torch
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image
from deit_scratch.pretrained import load_model
from deit_scratch.image_processor import DeiTImageProcessor
from deit_scratch.inference import predict, attention_maps, upsample_map

ROOT = Path(__file__).resolve().parents[1]

def main(out=ROOT/"nbs"/"images"/"course_model.png"):
    model_dir, examples = ROOT/"models"/"fashion-mnist-deit-distilled", ROOT/"models"/"fashion-mnist-examples"
    model, proc = load_model(model_dir), DeiTImageProcessor.from_pretrained(model_dir)
    files, seen = [], set()
    for p in sorted(examples.glob("*.png")):                      # the first test image of each class
        c = p.stem.split("-", 1)[1]
        if c not in seen: seen.add(c); files.append(p)
    preds = predict(model, proc, files, top_k=1)
    pv = proc([Image.open(p) for p in files], return_tensors="pt").pixel_values
    with torch.no_grad(): roll = attention_maps(model, pv, rollout=True)
    fig, axs = plt.subplots(3, len(files), figsize=(1.3 * len(files), 4.3))
    for j, (p, r) in enumerate(zip(files, preds)):
        img = np.asarray(Image.open(p), dtype=np.float32) / 255
        axs[0, j].imshow(img, cmap="gray"); axs[0, j].set_title(f"{r[0].label}\n{r[0].prob:.0%}", fontsize=8)
        for i, name in ((1, "cls"), (2, "distillation")):
            axs[i, j].imshow(img, cmap="gray"); axs[i, j].imshow(upsample_map(roll[name][j], img.shape).numpy(), cmap="inferno", alpha=0.6)
    for ax in axs.flat: ax.set_xticks([]); ax.set_yticks([])
    axs[1, 0].set_ylabel("CLS looks", fontsize=8); axs[2, 0].set_ylabel("DIST looks", fontsize=8)
    fig.suptitle("The course's distilled DeiT on test images it never saw: its prediction, and where its two tokens look", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")

if __name__ == "__main__":
    main()
