"""tools/no_leftovers.sh, which `make test` and CI run the notebooks and the tests under: it must catch a leftover."""
import os, subprocess, sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1]/"tools"/"no_leftovers.sh"

def run(tmp_path, code:str):
    "Run `python -c code` under the script, with `tmp_path` as the base temporary folder"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.run(["bash", str(SCRIPT), sys.executable, "-c", code], env=env, capture_output=True, text=True)

def test_a_leftover_fails_and_is_named(tmp_path):
    r = run(tmp_path, "import tempfile, pathlib; (pathlib.Path(tempfile.mkdtemp(prefix='forgotten-'))/'x').write_text('1')")
    assert r.returncode == 1 and "left these in its temporary folder" in r.stdout and "forgotten-" in r.stdout, r
    assert list(tmp_path.iterdir()) == []                     # the run's folder is removed all the same

def test_a_clean_run_passes_and_its_exit_status_is_kept(tmp_path):
    r = run(tmp_path, "import os, tempfile; tempfile.TemporaryDirectory().cleanup(); t = tempfile.gettempdir(); "
                      "open(t + '/.ses', 'w'); os.makedirs(t + '/torchelastic_x/run/attempt_0'); os.makedirs(t + '/torchinductor_me/h')")
    assert r.returncode == 0, r                  # ONNX Runtime's session file, torchrun's logs, inductor's headers: allowed
    assert run(tmp_path, "raise SystemExit(3)").returncode == 3
    assert list(tmp_path.iterdir()) == []
