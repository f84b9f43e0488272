import os, torch
# Triton reads TRITON_INTERPRET when it is imported: without a GPU, run its kernels in the CPU interpreter
if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(1)   # tiny models: one thread is as fast, and the 2 cores are often shared

def pytest_terminal_summary(terminalreporter):
    from deit_test_utils import WORST
    if WORST:
        terminalreporter.write_sep("-", "worst |deit_scratch - reference| per class (fp32)")
        for k,v in sorted(WORST.items()): terminalreporter.write_line(f"{k:45s} {v:.2e}")
