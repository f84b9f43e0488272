"""Export (notebook 22): `torch.export` of the four model classes with a dynamic batch and resolution, checked on
shapes it was not traced with (<= 1e-5); `torch.compile(fullgraph=True)` without graph breaks; ONNX through ONNX
Runtime (<= 1e-4); the `deit-scratch export` command end to end, and its errors."""
import os, warnings
import pytest, torch
from torch.utils import _pytree as pytree
from deit_scratch import DeiTModel, DeiTForImageClassification, DeiTForImageClassificationWithTeacher, DeiTForMaskedImageModeling
from deit_scratch.export import export_program, export_model, ExportedModel, output_names, main
from deit_scratch.config import small_config

pytestmark = pytest.mark.slow            # torch.export, inductor and ONNX exports: the full tier (make test-all, CI)

CLASSES = (DeiTModel, DeiTForImageClassification, DeiTForImageClassificationWithTeacher, DeiTForMaskedImageModeling)
UNSEEN = [(3, 3, 48, 64), (1, 3, 32, 32), (5, 3, 24, 40), (2, 3, 16, 96)]        # traced at (2, 3, 32, 32)

def onnx_or_skip():
    try: import onnxscript, onnxruntime  # noqa: F401
    except ImportError:
        if os.environ.get("CI"): pytest.fail("CI must run the ONNX tests: onnx, onnxscript and onnxruntime are dev dependencies")
        pytest.skip("onnx, onnxscript or onnxruntime not installed (pip install onnx onnxscript onnxruntime)")

def max_diff(a, b) -> float:
    pairs = [(x, y) for x, y in zip(pytree.tree_leaves(a), pytree.tree_leaves(b)) if y is not None]
    assert pairs and all(x is not None for x, _ in pairs)
    return max((x - y).abs().max().item() for x, y in pairs)

@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_torch_export_dynamic_batch_and_size(cls):
    torch.manual_seed(0)
    m = cls(small_config()).eval()
    ep = export_program(m)
    for shape in UNSEEN:
        x = torch.randn(*shape)
        with torch.no_grad(): got, want = ep.module()(x), m(x, interpolate_pos_encoding=True)
        assert type(got) is type(want)
        assert max_diff(got, want) <= 1e-5, (cls.__name__, shape)

def test_static_export_keeps_the_configured_size():
    m = DeiTForImageClassification(small_config()).eval()
    ep = export_program(m, dynamic_batch=True, dynamic_size=False)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad(): assert max_diff(ep.module()(x), m(x)) <= 1e-5
    with pytest.raises(Exception): ep.module()(torch.randn(1, 3, 48, 48))

def test_compile_fullgraph_has_no_graph_break():
    torch._dynamo.reset()
    m = DeiTForImageClassificationWithTeacher(small_config()).eval()
    compiled = torch.compile(m, fullgraph=True, backend="eager")          # capture only: fullgraph raises at any break
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): assert max_diff(compiled(x), m(x)) <= 1e-6
    explanation = torch._dynamo.explain(m)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1

@pytest.mark.parametrize("cls", (DeiTForImageClassification, DeiTForImageClassificationWithTeacher), ids=lambda c: c.__name__)
def test_onnx_runtime_round_trip(cls, tmp_path):
    onnx_or_skip()
    torch.manual_seed(0)
    m = cls(small_config()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model(m, tmp_path/"model.onnx")
    served = ExportedModel(tmp_path/"model.onnx")
    assert served.names == output_names(m)
    for shape in UNSEEN:
        x = torch.randn(*shape)
        with torch.no_grad(): got, want = served(x), m(x, interpolate_pos_encoding=True)
        assert type(got) is type(want) and max_diff(got, want) <= 1e-4, shape

def test_cli_export_and_predict_end_to_end(tmp_path, capsys):
    onnx_or_skip()
    from deit_scratch.helpers import sample_photo_path
    DeiTForImageClassificationWithTeacher(small_config(id2label={0: "cat", 1: "dog", 2: "fish", 3: "bird", 4: "ship"})).save_pretrained(tmp_path/"ckpt")
    for fmt in ("onnx", "pt2"):
        out = tmp_path/f"served-{fmt}"/f"model.{fmt}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(["export", str(tmp_path/"ckpt"), str(out), "--dynamic-batch", "--dynamic-size"]) == 0
        assert sorted(p.name for p in out.parent.iterdir()) == ["config.json", f"model.{fmt}", "preprocessor_config.json"]
        capsys.readouterr()
        assert main(["predict", str(sample_photo_path()), "--model", str(out), "--top-k", "2", "--json"]) == 0
        doc = __import__("json").loads(capsys.readouterr().out)
        assert doc["model_class"] == "ExportedModel" and len(doc["results"][0]["predictions"]) == 2
        assert doc["results"][0]["predictions"][0]["label"] in {"cat", "dog", "fish", "bird", "ship"}
        # bf16 cannot apply to an exported graph: refused in one line; auto runs it in its own precision
        assert main(["predict", str(sample_photo_path()), "--model", str(out), "--precision", "bf16"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--precision bf16 needs a PyTorch model" in err and "exported graph" in err, err
        assert main(["predict", str(sample_photo_path()), "--model", str(out), "--precision", "auto", "--json"]) == 0
        assert __import__("json").loads(capsys.readouterr().out)["precision"] == "fp32"

def test_cli_export_errors(tmp_path, capsys):
    DeiTForImageClassification(small_config()).save_pretrained(tmp_path/"ckpt")
    assert main(["export", str(tmp_path/"ckpt"), str(tmp_path/"x.onnx"), "--format", "tflite"]) == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main(["export", str(tmp_path/"ckpt"), str(tmp_path/"x.bin")]) == 1
    assert "cannot tell the format of" in capsys.readouterr().err
    (tmp_path/"broken").mkdir(); (tmp_path/"broken"/"config.json").write_text("{not json")
    assert main(["export", str(tmp_path/"broken"), str(tmp_path/"y.onnx")]) == 1
    err = capsys.readouterr().err
    assert "is not valid JSON" in err and len(err.strip().splitlines()) == 1
    assert main(["export", str(tmp_path/"nowhere"), str(tmp_path/"z.onnx")]) == 1
    assert "model not found" in capsys.readouterr().err
    assert not (tmp_path/"y.onnx").exists() and not (tmp_path/"z.onnx").exists()

def test_jit_trace_and_fx():
    "torch.jit.trace takes tuples, not dataclasses (as for transformers without torchscript=True): ExportWrapper gives it one"
    from deit_scratch.export import ExportWrapper
    m = DeiTForImageClassificationWithTeacher(small_config()).eval()
    x = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)          # the shape checks become constants: expected
        with torch.no_grad(): traced = torch.jit.trace(ExportWrapper(m, interpolate_pos_encoding=False), (x,))
    with torch.no_grad(): got, want = traced(x), m(x)
    assert isinstance(got, tuple) and len(got) == 3 and max_diff(got, want.to_tuple()) <= 1e-6
    gm = export_program(m).module()                                       # torch.export's program is a torch.fx GraphModule
    assert isinstance(gm, torch.fx.GraphModule) and any(n.op == "call_function" for n in gm.graph.nodes)
