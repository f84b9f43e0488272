#!/usr/bin/env python
"""Throughput of deit-scratch's DeiTImageProcessor against transformers' DeiTImageProcessorPil, side by side in one process.

    .venv/bin/python benchmarks/preprocessing.py [--batch 32] [--rounds 7] [--workers N]

Scenarios: the real photos of tests/images (PIL images, decoded beforehand) cycled to a batch, the same photos as
file paths (decoding included), synthetic PIL images of assorted sizes, and a synthetic (B, 480, 640, 3) uint8 array.
Each round times both processors once on the same input, in alternating order, so that load from other processes
hits both alike; the table gives median images/s and the median of the per-round ratios (ours / transformers, > 1:
we are faster). Every scenario is first checked for bit-identity (max |diff| == 0, same dtype and shape).
"""
import argparse, logging, os, statistics, time
from pathlib import Path
import numpy as np
import torch
from PIL import Image
from deit_scratch.image_processor import DeiTImageProcessor, _n_cpus

IMAGES = Path(__file__).resolve().parents[1] / "tests" / "images"

def scenarios(batch:int) -> dict:
    rng = np.random.default_rng(0)
    sizes = [(480, 640), (640, 480), (300, 451), (1024, 768), (200, 200), (720, 1280), (150, 120), (512, 512)]
    out = {}
    paths = sorted(p for p in IMAGES.glob("*") if p.suffix.lower() in (".jpg", ".png")) if IMAGES.is_dir() else []
    if paths:
        photos = [Image.open(p).convert("RGB") for p in paths]
        out[f"real photos x{batch} (PIL)"] = [photos[i % len(photos)] for i in range(batch)]
        out[f"real photos x{batch} (paths)"] = [str(paths[i % len(paths)]) for i in range(batch)]
    else: print(f"!! {IMAGES} not found: real-photo scenarios skipped")
    out[f"synthetic PIL x{batch}, mixed sizes"] = [Image.fromarray(rng.integers(0, 256, sizes[i % len(sizes)] + (3,), dtype=np.uint8))
                                                  for i in range(batch)]
    out[f"synthetic uint8 array ({batch}, 480, 640, 3)"] = rng.integers(0, 256, (batch, 480, 640, 3), dtype=np.uint8)
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workers", type=int, default=None, help="threads for ours (default: one per available core)")
    a = ap.parse_args()
    import transformers
    from transformers import DeiTImageProcessorPil
    logging.getLogger("transformers").setLevel(logging.ERROR)
    hf, ours = DeiTImageProcessorPil(), DeiTImageProcessor(num_workers=a.workers)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, Pillow {Image.__version__}, numpy {np.__version__}; "
          f"{_n_cpus()} core(s) available, load average {os.getloadavg()[0]:.1f}; ours with {a.workers or _n_cpus()} thread(s)")
    print(f"{'scenario':42s} {'hf img/s':>9s} {'ours img/s':>10s} {'ours/hf':>8s}  (per-round ratios)   bit-identical")
    for name, images in scenarios(a.batch).items():
        ref, got = hf(images, return_tensors="pt").pixel_values, ours(images, return_tensors="pt").pixel_values
        same = ref.dtype == got.dtype and ref.shape == got.shape and torch.equal(ref, got)
        n = len(images)
        t_hf, t_us = [], []
        for r in range(a.rounds):
            order = [(hf, t_hf), (ours, t_us)] if r % 2 == 0 else [(ours, t_us), (hf, t_hf)]
            for proc, ts in order:
                t0 = time.perf_counter(); proc(images, return_tensors="pt"); ts.append(time.perf_counter() - t0)
        ratios = sorted(h / u for h, u in zip(t_hf, t_us))
        print(f"{name:42s} {n / statistics.median(t_hf):9.0f} {n / statistics.median(t_us):10.0f} {statistics.median(ratios):8.2f}"
              f"  ({' '.join(f'{x:.1f}' for x in ratios)})   {'yes' if same else 'NO'} (max |diff| "
              f"{(ref.double() - got.double()).abs().max().item() if ref.shape == got.shape else 'shape'})")

if __name__ == "__main__":
    main()
