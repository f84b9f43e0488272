import os, tempfile
from pathlib import Path

# Forcing torch's dispatch lower (ATEN_CPU_CAPABILITY=avx2 or default) exercises other kernels on this machine. Two
# things make that setting alone describe no real CPU, and both fail inside torch 2.13, not in this library:
# - oneDNN still uses the CPU's AVX-512/AMX, and bf16 flash attention then calls a packing kernel the forced dispatch
#   refuses ("pack_vnni2 is only supported when avx512 is supported"): limit oneDNN and MKL to the same level;
# - inductor's cache is not keyed on the forced level, and a graph cached at the machine's own level returned NaN:
#   give each forced level its own cache.
_forced = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
if _forced in ("avx2", "default"):
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2" if _forced == "avx2" else "SSE41")
    os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2" if _forced == "avx2" else "SSE4_2")
if _forced:
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"torchinductor-deit-scratch-{_forced}"))
os.environ.setdefault("KINETO_LOG_LEVEL", "6")   # no trace lines from torch's profiler (kineto prints them at its default level)

import pytest, torch
# Triton reads TRITON_INTERPRET when it is imported: without a GPU, run its kernels in the CPU interpreter
if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(1)   # tiny models: one thread is as fast, and the 2 cores are often shared

def pytest_terminal_summary(terminalreporter):
    from deit_test_utils import WORST
    if WORST:
        terminalreporter.write_sep("-", "worst |deit_scratch - reference| per class (fp32)")
        for k,v in sorted(WORST.items()): terminalreporter.write_line(f"{k:45s} {v:.2e}")


# The real photos, in the repository (public domain / CC0: tests/images/README.md has their sources and licences)
IMAGES = Path(__file__).resolve().parent / "images"
PHOTO_NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "grace_hopper.jpg", "rocket.jpg"]

@pytest.fixture(scope="session")
def photo_paths():
    "Paths of the five real test photos (tests/images)"
    if not IMAGES.is_dir(): pytest.fail(f"real photos not found at {IMAGES} (they are part of the repository)")
    paths = [IMAGES / n for n in PHOTO_NAMES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing: pytest.fail(f"real photos missing: {missing}")
    return paths


# Fashion-MNIST (Debian's dataset-fashion-mnist, the cache, or a download): skipped on a user's machine without it,
# a failure in CI (CI=true), where .ci/run installs the package
@pytest.fixture(scope="session")
def fashion_dir():
    "The folder holding Fashion-MNIST's four IDX files"
    from deit_scratch.data import find_fashion_mnist, DEBIAN_FASHION_MNIST
    d, t = find_fashion_mnist("train"), find_fashion_mnist("test")
    if d is None or t is None:
        why = (f"Fashion-MNIST not found (apt-get install dataset-fashion-mnist puts it in {DEBIAN_FASHION_MNIST}, "
               "or see deit_scratch.data.load_fashion_mnist)")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"): pytest.fail(why + ": CI must have it")
        pytest.skip(why)
    return d
