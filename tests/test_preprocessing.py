"""`deit_scratch.image_processor.DeiTImageProcessor` against transformers 5.23's `DeiTImageProcessorPil`: bit-identical
output (same type, shape, dtype, max |diff| == 0) on the real photos in tests/images and on synthetic inputs,
plus modes, paths/EXIF, configuration files, the facebookresearch preset and every error case."""
import io, json, logging
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from deit_scratch.preprocessing import (HIGH_DEPTH_MODES, high_depth_to_8bit, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD,
                                        load_image, normalize_lut, rescale_normalize)
from deit_scratch.image_processor import DeiTImageProcessor, BatchFeature

transformers = pytest.importorskip("transformers")
from transformers import DeiTImageProcessorPil
from transformers.image_transforms import normalize as hf_normalize, rescale as hf_rescale

logging.getLogger("transformers").setLevel(logging.ERROR)      # its channel-ambiguity warnings are expected here
# float arrays in [0, 1] with do_rescale=True are compared with transformers on purpose: the warning they raise is
# tested where it is the point (test_robustness.py::test_float_arrays_in_0_1_warn_when_rescaled)
pytestmark = pytest.mark.filterwarnings("ignore:It looks like you are trying to rescale already rescaled images:UserWarning")


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def photos(photo_paths):
    ims = []
    for p in photo_paths:
        with Image.open(p) as im: ims.append(im.convert("RGB"))
    return ims

@pytest.fixture(scope="module")
def hf(): return DeiTImageProcessorPil()

@pytest.fixture(scope="module")
def ours(): return DeiTImageProcessor()

def assert_identical(a, b):
    "Same container type, shape, dtype, and max |a - b| == 0"
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (type(b), len(a))
        for x, y in zip(a, b): assert_identical(x, y)
        return
    assert type(a) is type(b), (type(a), type(b))
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    a, b = (t.numpy() if isinstance(t, torch.Tensor) else t for t in (a, b))
    assert np.array_equal(a, b), f"max |diff| = {np.abs(a.astype(np.float64) - b.astype(np.float64)).max()}"

def both(hf, ours, images, **kw):
    "Run both processors with the same arguments and assert bit-identical pixel_values"
    a = hf(images, **kw).pixel_values
    b = ours(images, **kw).pixel_values
    assert_identical(a, b)
    return b

rng = np.random.default_rng(0)
def rand_u8(*shape): return rng.integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------- real photos
@pytest.mark.parametrize("return_tensors", ["pt", "np", None])
def test_real_photos_one_by_one(hf, ours, photos, return_tensors):
    for im in photos: both(hf, ours, im, return_tensors=return_tensors)

def test_real_photos_batch_of_32(hf, ours, photos):
    batch = [photos[i % len(photos)] for i in range(32)]
    out = both(hf, ours, batch, return_tensors="pt")
    assert out.shape == (32, 3, 224, 224) and out.dtype == torch.float32

def test_real_photos_from_paths(hf, ours, photo_paths):
    # transformers takes str paths (load_image: exif_transpose + convert RGB); we also take pathlib.Path
    both(hf, ours, [str(p) for p in photo_paths], return_tensors="pt")
    assert_identical(ours([str(p) for p in photo_paths], return_tensors="pt").pixel_values,
                     ours(list(photo_paths), return_tensors="pt").pixel_values)

def test_real_photos_lazily_opened_and_repeated(hf, ours, photo_paths):
    # unloaded PIL images, each listed twice: decoded once, never by two threads at a time
    lazy = [Image.open(p) for p in photo_paths]
    b = ours(lazy + lazy, return_tensors="pt").pixel_values
    a = hf([Image.open(p) for p in photo_paths] * 2, return_tensors="pt").pixel_values
    assert_identical(a, b)

HUB_MEAN_STD = dict(image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD)
PARAMS = [dict(), HUB_MEAN_STD, dict(do_resize=False), dict(do_center_crop=False), dict(do_rescale=False),
          dict(do_normalize=False), dict(do_rescale=False, do_normalize=False), dict(do_resize=False, do_center_crop=False),
          dict(size=384, crop_size=384), dict(size=300, crop_size=(200, 100)), dict(size=(120, 330), crop_size=224),
          dict(size={"shortest_edge": 256}), dict(size={"shortest_edge": 200, "longest_edge": 300}),
          dict(size={"max_height": 100, "max_width": 300}), dict(size=256, default_to_square=False),
          dict(crop_size={"height": 500, "width": 30}), dict(resample=Image.Resampling.LANCZOS), dict(resample=0), dict(resample=Image.Resampling.HAMMING), dict(resample=Image.Resampling.BOX),
          dict(resample=Image.Resampling.BILINEAR, **HUB_MEAN_STD), dict(rescale_factor=0.5), dict(rescale_factor=1 / 127.5),
          dict(image_mean=0.3, image_std=0.7), dict(image_mean=[0.1, 0.2, 0.3], image_std=[1.0, 2.0, 3.0]),
          dict(do_convert_rgb=True), dict(do_convert_rgb=False)]

@pytest.mark.parametrize("kw", PARAMS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
def test_real_photos_parameters_per_call(hf, ours, photos, kw):
    both(hf, ours, photos[:3], return_tensors=None, **kw)

@pytest.mark.parametrize("kw", PARAMS[:12], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
def test_real_photos_parameters_in_constructor(photos, kw):
    a = DeiTImageProcessorPil(**kw)(photos[3:], return_tensors=None).pixel_values
    b = DeiTImageProcessor(**kw)(photos[3:], return_tensors=None).pixel_values
    assert_identical(a, b)


# ---------------------------------------------------------------- synthetic images
SIZES = [(1, 1), (3, 2), (10, 7), (223, 224), (224, 224), (225, 223), (256, 256), (100, 300), (300, 100), pytest.param((1500, 2000), marks=pytest.mark.slow)]

@pytest.mark.parametrize("hw", SIZES, ids=str)
def test_synthetic_pil_and_arrays(hf, ours, hw):
    x = rand_u8(*hw, 3)                                                    # (H, W, 3)
    fmt = dict(input_data_format="channels_last")                          # tiny arrays are ambiguous: say it
    cases = [(Image.fromarray(x), {}), (x, fmt), (np.ascontiguousarray(x.transpose(2, 0, 1)), dict(input_data_format="channels_first")),
             (torch.from_numpy(x.transpose(2, 0, 1).copy()), dict(input_data_format="channels_first")),
             (x.astype(np.float32) / 255, fmt), ((x / 255).astype(np.float64), fmt), (x.astype(np.float64), fmt),
             (x.astype(np.int64), fmt), (torch.from_numpy(x.astype(np.float32) / 255), fmt)]
    for im, kw in cases:
        for extra in ({}, dict(do_resize=False), dict(do_rescale=False), dict(do_center_crop=False, size=64)):
            both(hf, ours, im, return_tensors="pt" if "do_resize" in extra else None, **kw, **extra)

def test_synthetic_float_inputs_without_resize_keep_dtype(hf, ours):
    x = rng.random((3, 40, 50))
    for dt in (np.float16, np.float32, np.float64):
        for kw in (dict(do_rescale=False), dict(do_rescale=False, do_normalize=False), dict()):
            both(hf, ours, x.astype(dt), do_resize=False, return_tensors="np", **kw)

def test_synthetic_integer_valued_floats_and_bools(hf, ours):
    both(hf, ours, rand_u8(40, 30, 3).astype(np.float32), return_tensors="pt")   # integers in a float array: not rescaled before PIL
    with pytest.raises(TypeError, match="got dtype bool: say what True means"):     # transformers reads True as 1 (of 255): a choice
        ours(rng.random((40, 30, 3)) > 0.5, return_tensors="pt")

def test_synthetic_batches_and_nesting(hf, ours):
    b = rand_u8(4, 60, 70, 3)                                              # (B, H, W, C)
    both(hf, ours, b, return_tensors="pt")
    both(hf, ours, torch.from_numpy(b).permute(0, 3, 1, 2), return_tensors="pt")
    ims = [Image.fromarray(a) for a in b]
    both(hf, ours, [ims[:2], ims[2:]], return_tensors="pt")                # nested lists
    both(hf, ours, [b[:2], b[2:]], return_tensors="pt")                    # a list of 4-D batches
    both(hf, ours, tuple(ims), return_tensors="np")

def test_synthetic_ragged_list_output(hf, ours):
    ims = [Image.fromarray(rand_u8(h, w, 3)) for h, w in [(30, 40), (50, 20), (7, 9)]]
    out = both(hf, ours, ims, do_resize=False, do_center_crop=False, return_tensors=None)
    assert [o.shape for o in out] == [(3, 30, 40), (3, 50, 20), (3, 7, 9)]
    with pytest.raises(ValueError, match="different output shapes"):
        ours(ims, do_resize=False, do_center_crop=False, return_tensors="pt")

def test_threads_do_not_change_results(photos):
    batch = [photos[i % len(photos)] for i in range(16)]
    a = DeiTImageProcessor(num_workers=1)(batch, return_tensors="pt").pixel_values
    for n in (2, 3, 8): assert_identical(a, DeiTImageProcessor()(batch, return_tensors="pt", num_workers=n).pixel_values)


# ---------------------------------------------------------------- the arithmetic
@pytest.mark.parametrize("mean,std", [(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD), ((0.5,) * 3, (0.5,) * 3),
                                      ((0.1, 0.7, 0.33), (0.9, 0.05, 1 / 3)), (0.25, 0.75)])
@pytest.mark.parametrize("scale", [1 / 255, 0.5, 1 / 127.5])
def test_lookup_table_is_transformers_arithmetic(mean, std, scale):
    v = np.tile(np.arange(256, dtype=np.uint8), (3, 1))[:, None, :]       # (3, 1, 256) channels first, every byte
    for do_rescale, do_normalize in [(True, True), (True, False), (False, True)]:
        ref = v
        if do_rescale: ref = hf_rescale(ref, scale, input_data_format="channels_first")
        if do_normalize: ref = hf_normalize(ref, mean, std, input_data_format="channels_first")
        lut = normalize_lut(3, do_rescale, scale, do_normalize, mean, std)
        assert lut.dtype == ref.dtype == np.float32
        assert np.array_equal(lut, ref[:, 0, :])
        assert np.array_equal(rescale_normalize(v[:, 0, :].T, do_rescale, scale, do_normalize, mean, std), ref[:, 0, :].T)


# ---------------------------------------------------------------- modes
def _modes():
    rgb = Image.fromarray(rand_u8(120, 90, 3)); rgba = Image.fromarray(rand_u8(120, 90, 4))
    d = {m: rgb.convert(m) for m in ["L", "1", "CMYK", "YCbCr", "HSV", "LAB", "I", "F", "I;16", "I;16B", "RGBX"]}
    d.update(RGBA=rgba, LA=rgba.convert("LA"), RGBa=rgba.convert("RGBa"), PA=rgba.convert("PA"), P=rgb.convert("P"))
    p = rgb.convert("P"); p.info["transparency"] = 5; d["P+transparency"] = p
    p = rgb.convert("P"); p.info["transparency"] = bytes(range(0, 256)); d["P+alpha palette"] = p
    l = rgb.convert("L"); l.info["transparency"] = 7; d["L+transparency"] = l
    r = rgb.copy(); r.info["transparency"] = (10, 20, 30); d["RGB+transparency"] = r
    d["I;16 full range"] = Image.fromarray(rng.integers(0, 65536, (50, 60), dtype=np.uint16))
    d["F wide"] = Image.fromarray(rng.standard_normal((50, 60)).astype(np.float32) * 300)
    d["I negative"] = Image.fromarray(rng.integers(-1000, 1000, (50, 60), dtype=np.int32))
    return d
MODES = _modes()

def _as_we_read_it(im):
    "16-bit and float images are scaled to 8 bits first (notebook 08: a choice, transformers clips), or None: refused"
    if im.mode not in HIGH_DEPTH_MODES: return im
    try: return high_depth_to_8bit(im)
    except ValueError: return None

@pytest.mark.parametrize("name", list(MODES))
def test_modes_convert_rgb_true(hf, ours, name):
    im = _as_we_read_it(MODES[name])
    if im is None:
        with pytest.raises(ValueError, match="scale it"): ours(MODES[name], do_convert_rgb=True, return_tensors="pt")
        return
    assert_identical(hf(im, do_convert_rgb=True, return_tensors="pt").pixel_values,
                     ours(MODES[name], do_convert_rgb=True, return_tensors="pt").pixel_values)
    if im is MODES[name] or MODES[name].mode in ("I", "F"): return
    assert not torch.equal(hf(MODES[name], do_convert_rgb=True, return_tensors="pt").pixel_values,   # 16-bit: transformers clips
                           ours(MODES[name], do_convert_rgb=True, return_tensors="pt").pixel_values)

@pytest.mark.parametrize("name", list(MODES))
def test_modes_our_default_converts_what_is_not_rgb(ours, name):
    im = _as_we_read_it(MODES[name])
    if im is None:
        with pytest.raises(ValueError, match="scale it"): ours(MODES[name], return_tensors="pt")
        return
    a = DeiTImageProcessorPil(do_convert_rgb=True if im.mode != "RGB" else None)(im, return_tensors="pt").pixel_values
    assert_identical(a, ours(MODES[name], return_tensors="pt").pixel_values)

@pytest.mark.parametrize("name", list(MODES))
def test_modes_convert_rgb_false_is_transformers_default(hf, ours, name):
    im = MODES[name]
    try: a = hf(im, return_tensors="pt").pixel_values
    except ValueError:
        with pytest.raises(ValueError): ours(im, do_convert_rgb=False, return_tensors="pt")
        return
    assert_identical(a, ours(im, do_convert_rgb=False, return_tensors="pt").pixel_values)

def test_modes_where_transformers_fails_or_misreads(hf, ours):
    la = MODES["LA"].convert("La")
    with pytest.raises(ValueError, match="La"): hf(la, do_convert_rgb=True)
    assert_identical(ours(la, return_tensors="pt").pixel_values, ours(la.convert("LA"), return_tensors="pt").pixel_values)
    with pytest.raises(ValueError, match="mean must have 1 elements"): hf(MODES["L"])
    with pytest.raises(ValueError, match="image_mean has 3 values but the image has 1 channel"): ours(MODES["L"], do_convert_rgb=False)
    ycc = MODES["YCbCr"]                                                  # transformers reads YCbCr bytes as if RGB
    assert not np.array_equal(hf(ycc, return_tensors="np").pixel_values, ours(ycc, return_tensors="np").pixel_values)
    assert_identical(hf(ycc.convert("RGB"), return_tensors="pt").pixel_values, ours(ycc, return_tensors="pt").pixel_values)

@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_arrays_convert_rgb(hf, ours, dtype, channels, layout):
    x = rand_u8(40, 50, channels)
    x = x.astype(dtype) / (255 if dtype != np.uint8 else 1)
    x = x.astype(dtype) if layout == "channels_last" else np.ascontiguousarray(x.astype(dtype).transpose(2, 0, 1))
    a = hf(x, do_convert_rgb=True, return_tensors="pt").pixel_values
    assert_identical(a, ours(x, do_convert_rgb=True, return_tensors="pt").pixel_values)
    assert_identical(a, ours(x, return_tensors="pt").pixel_values)        # our default converts 1 and 4 channels
    assert_identical(a, ours(torch.from_numpy(x), return_tensors="pt").pixel_values)


# ---------------------------------------------------------------- paths and EXIF
def test_exif_orientation_from_paths(hf, ours, tmp_path):
    base = Image.fromarray(rand_u8(90, 160, 3))                             # stored landscape (W 160, H 90)
    for orientation in range(1, 9):
        exif = Image.Exif(); exif[274] = orientation
        f = tmp_path / f"o{orientation}.jpg"; base.save(f, exif=exif, quality=95)
        loaded = load_image(f)
        with Image.open(f) as raw: expected = ImageOps.exif_transpose(raw).convert("RGB")
        assert loaded.size == expected.size == ((90, 160) if orientation >= 5 else (160, 90))
        assert np.array_equal(np.asarray(loaded), np.asarray(expected))
        both(hf, ours, str(f), return_tensors="pt", do_center_crop=False)   # transformers' load_image does the same
        assert_identical(ours(f, return_tensors="pt").pixel_values, ours(str(f), return_tensors="pt").pixel_values)

def test_path_to_transparent_png_follows_transformers(hf, ours, tmp_path):
    f = tmp_path / "rgba.png"; MODES["RGBA"].save(f)
    both(hf, ours, str(f), return_tensors="pt")                             # load_image: plain convert("RGB")


# ---------------------------------------------------------------- errors
def test_errors_non_images(ours, tmp_path):
    for bad, exc, msg in [(42, TypeError, "got int"), (None, TypeError, "got NoneType"), ({"a": 1}, TypeError, "got dict"),
                          (b"bytes", TypeError, "got bytes"), (np.full((3, 4, 5), "a"), TypeError, "real-valued"),
                          (np.zeros((3, 4, 5), complex), TypeError, "real-valued"), ([], ValueError, "No images"),
                          (str(tmp_path / "missing.jpg"), ValueError, "not found"), (tmp_path, ValueError, "Not a file"),
                          ("https://example.com/cat.jpg", ValueError, "URLs are not fetched")]:
        with pytest.raises(exc, match=msg): ours(bad)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="is not an image file"): ours(tmp_path / "notes.txt")
    with pytest.raises(TypeError, match="image 1: Expected a PIL image"): ours([Image.new("RGB", (5, 5)), 3.5])

def test_errors_truncated_files(ours, tmp_path):
    buf = io.BytesIO(); Image.fromarray(rand_u8(200, 300, 3)).save(buf, "JPEG"); data = buf.getvalue()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"): ours(tmp_path / "cut.jpg")
    with pytest.raises(ValueError, match="truncated or corrupt"): ours(Image.open(tmp_path / "cut.jpg"))   # lazily opened
    buf = io.BytesIO(); Image.fromarray(rand_u8(200, 300, 3)).save(buf, "PNG"); data = buf.getvalue()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="truncated or corrupt"): ours(str(tmp_path / "cut.png"))

def test_errors_zero_size(hf, ours):
    hf(Image.new("RGB", (0, 0)))                                            # transformers accepts it silently
    for im in [Image.new("RGB", (0, 0)), Image.new("L", (0, 7)), np.zeros((3, 0, 5), np.uint8), torch.zeros(0, 4, 3)]:
        with pytest.raises(ValueError, match="Zero-size image"): ours(im)

def test_errors_shapes_and_arguments(ours):
    for bad, msg in [(np.zeros((5, 6)), "add a channel axis"), (np.zeros((2, 2, 3, 4, 5)), "got shape"),
                     (np.zeros((5, 6, 2)), "Cannot tell the channel axis"), (np.zeros((5, 6, 7)), "Cannot tell the channel axis")]:
        with pytest.raises(ValueError, match=msg): ours(bad)
    im = Image.new("RGB", (9, 9))
    for kw, exc, msg in [(dict(do_resise=False), TypeError, "Unexpected argument"), (dict(return_tensors="tf"), ValueError, "return_tensors"),
                         (dict(size={"height": 5}), ValueError, "key sets"), (dict(size=-3), ValueError, "positive ints"),
                         (dict(crop_size={"shortest_edge": 5}), ValueError, "crop_size must have 'height'"),
                         (dict(resample="sharpest"), ValueError, "resample must be"), (dict(image_mean="abc"), ValueError, "image_mean"),
                         (dict(image_std=[0.5, 0.5]), ValueError, "image_std has 2 values but the image has 3"),
                         (dict(numerics="opencv"), ValueError, "numerics must be"),
                         (dict(input_data_format="nchw"), ValueError, "input_data_format")]:
        with pytest.raises(exc, match=msg): ours(np.zeros((9, 9, 3), np.uint8) if "input_data_format" in kw else im, **kw)
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"): ours(np.full((5, 6, 3), 1.5))
    with pytest.raises(ValueError, match="outside \\[0, 255\\]"): ours(np.full((5, 6, 3), 300.0))
    with pytest.raises(ValueError, match="RGBA image must hold values in \\[0, 1\\]"): ours(np.full((5, 6, 4), 2.0))
    with pytest.warns(UserWarning, match="Ambiguous channel axis"): ours(np.zeros((3, 5, 3), np.uint8))

def test_errors_decompression_bomb(ours, tmp_path, monkeypatch):
    f = tmp_path / "big.png"; Image.new("RGB", (300, 200)).save(f)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)                  # 60,000 pixels > 2 * 10,000
    with pytest.raises(ValueError, match="decompression bomb"): ours(f)
    with pytest.raises(ValueError, match="decompression bomb"): load_image(str(f))


# ---------------------------------------------------------------- outputs
def test_output_container(ours, hf, photos):
    out = ours(photos[0], return_tensors="pt")
    assert isinstance(out, BatchFeature) and isinstance(out, dict) and list(out) == ["pixel_values"]
    assert out.pixel_values is out["pixel_values"]
    assert out.to(torch.float16).pixel_values.dtype == torch.float16
    with pytest.raises(AttributeError): out.labels
    lst = ours(photos[:2]).pixel_values
    assert isinstance(lst, list) and all(isinstance(a, np.ndarray) and a.shape == (3, 224, 224) for a in lst)
    assert_identical(hf(photos[:2]).pixel_values, lst)


# ---------------------------------------------------------------- configuration files
def test_default_config_file_is_transformers(tmp_path):
    DeiTImageProcessor().save_pretrained(tmp_path / "ours"); DeiTImageProcessorPil().save_pretrained(tmp_path / "hf")
    assert (tmp_path / "ours" / "preprocessor_config.json").read_text() == (tmp_path / "hf" / "preprocessor_config.json").read_text()

@pytest.mark.parametrize("kw", [dict(), HUB_MEAN_STD, dict(size=384, crop_size=(300, 200), resample=2, do_convert_rgb=True),
                                dict(size={"shortest_edge": 256}, do_center_crop=False, image_mean=0.4, image_std=0.6),
                                dict(do_rescale=False, rescale_factor=0.5, do_normalize=False, do_convert_rgb=False)])
def test_config_files_both_ways(tmp_path, photos, kw):
    ours = DeiTImageProcessor(**kw); ours.save_pretrained(tmp_path / "ours")
    theirs = DeiTImageProcessorPil.from_pretrained(tmp_path / "ours")
    assert_identical(theirs(photos[:2]).pixel_values, ours(photos[:2]).pixel_values)
    DeiTImageProcessorPil(**kw).save_pretrained(tmp_path / "hf")
    back = DeiTImageProcessor.from_pretrained(tmp_path / "hf")
    assert back == ours and back.to_dict() == ours.to_dict()
    assert json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text()) == \
           json.loads((tmp_path / "ours" / "preprocessor_config.json").read_text())
    assert DeiTImageProcessor.from_pretrained(tmp_path / "ours" / "preprocessor_config.json") == ours

def test_legacy_hub_style_file(tmp_path, photos):
    # the released checkpoints' files were written by DeiTFeatureExtractor: legacy ints and ImageNet statistics
    legacy = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
              "feature_extractor_type": "DeiTFeatureExtractor", "image_mean": [0.485, 0.456, 0.406],
              "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": 256}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(legacy))
    ours, theirs = DeiTImageProcessor.from_pretrained(tmp_path), DeiTImageProcessorPil.from_pretrained(tmp_path)
    assert ours.image_mean == IMAGENET_DEFAULT_MEAN and DeiTImageProcessor().image_mean == (0.5, 0.5, 0.5)
    assert_identical(theirs(photos, return_tensors="pt").pixel_values, ours(photos, return_tensors="pt").pixel_values)
    over = DeiTImageProcessor.from_pretrained(tmp_path, crop_size=200)
    assert over.crop_size == {"height": 200, "width": 200}
    assert "feature_extractor_type" not in ours.to_dict() and ours.to_dict()["image_processor_type"] == "DeiTImageProcessor"

def test_config_file_errors(tmp_path):
    with pytest.raises(ValueError, match="No preprocessor_config.json"): DeiTImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"): DeiTImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"): DeiTImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "CLIPImageProcessor"}))
    with pytest.warns(UserWarning, match="CLIPImageProcessor"): DeiTImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file"): DeiTImageProcessor().save_pretrained(tmp_path / "f")

def test_unknown_config_keys_survive_a_round_trip(tmp_path):
    p = DeiTImageProcessor.from_dict({"size": 256, "crop_size": 224, "image_seq_length": 7})
    p.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["image_seq_length"] == 7


# ---------------------------------------------------------------- the facebookresearch/deit eval preset
def torchvision_eval_by_hand(im:Image.Image, resize=256, crop=224):
    "Resize(resize, BICUBIC) + CenterCrop(crop) + ToTensor + Normalize(ImageNet), torchvision's code paths written out"
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
    im = im.resize((nw, nh), Image.Resampling.BICUBIC) if (nw, nh) != (w, h) else im
    if crop > nw or crop > nh:                                              # torchvision pads (d // 2 before), fill 0
        pl, pt = max(crop - nw, 0) // 2, max(crop - nh, 0) // 2
        canvas = Image.new("RGB", (max(nw, crop), max(nh, crop))); canvas.paste(im, (pl, pt)); im = canvas
        nw, nh = im.size
    top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
    im = im.crop((left, top, left + crop, top + crop))
    t = torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)   # ToTensor
    mean = torch.as_tensor(IMAGENET_DEFAULT_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(IMAGENET_DEFAULT_STD, dtype=torch.float32)[:, None, None]
    return t.sub_(mean).div_(std)                                           # Normalize

def test_facebook_eval_preset(photos):
    fb = DeiTImageProcessor.facebook_eval()
    assert fb.size == {"shortest_edge": 256} and fb.crop_size == {"height": 224, "width": 224}
    ims = photos + [Image.fromarray(rand_u8(h, w, 3)) for h, w in [(100, 90), (300, 1000), (37, 301), (255, 257)]]
    out = fb(ims, return_tensors="pt").pixel_values
    assert out.shape == (len(ims), 3, 224, 224) and out.dtype == torch.float32
    for o, im in zip(out, ims): assert torch.equal(o, torchvision_eval_by_hand(im))
    assert DeiTImageProcessor.facebook_eval(384).size == {"shortest_edge": 438}

def test_facebook_eval_differs_from_transformers_numerics(photos, photo_paths, tmp_path):
    # same sizes, transformers' rounding: on rocket.jpg (383x256 after resizing) the crop starts at column 79, not 80
    rocket = photos[[p.name for p in photo_paths].index("rocket.jpg")]
    fb, hf_like = DeiTImageProcessor.facebook_eval(), DeiTImageProcessor.facebook_eval(numerics="transformers")
    a, b = fb(rocket, return_tensors="np").pixel_values[0], hf_like(rocket, return_tensors="np").pixel_values[0]
    r = np.asarray(rocket.resize((383, 256), Image.Resampling.BICUBIC))
    stats = dict(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    assert np.array_equal(a, rescale_normalize(r[16:240, 80:304], numerics="torchvision", **stats).transpose(2, 0, 1))
    assert np.array_equal(b, rescale_normalize(r[16:240, 79:303], **stats).transpose(2, 0, 1))
    theirs = DeiTImageProcessorPil(size={"shortest_edge": 256}, **HUB_MEAN_STD)
    assert_identical(theirs(rocket, return_tensors="np").pixel_values[0], b)
    fb.save_pretrained(tmp_path)                                            # transformers reads the file (ignoring numerics)
    assert_identical(DeiTImageProcessorPil.from_pretrained(tmp_path)(rocket, return_tensors="np").pixel_values[0], b)
    assert DeiTImageProcessor.from_pretrained(tmp_path) == fb


# ---------------------------------------------------------------- the windowed resize (resize only the crop window)
def test_windowed_resize_equals_resize_then_crop():
    from deit_scratch.preprocessing import _resize_window, _SUPPORT, _window_works
    rng = np.random.default_rng(1)
    for rs in _SUPPORT:
        assert _window_works(rs)
        for _ in range(120):
            H, W = (int(v) for v in rng.integers(1, 700, 2))
            h, w = (int(v) for v in rng.choice([256, 128, 512, 384, 300, 224, 64, 2, 1], 2))
            ch, cw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            im = Image.fromarray(rand_u8(H, W, 3)).convert("RGB" if rng.random() < 0.7 else "L")
            ref = np.asarray(im.resize((w, h), rs))[top:top + ch, left:left + cw]
            got = _resize_window(im, h, w, top, left, ch, cw, rs)
            assert got.shape == ref.shape and np.array_equal(got, ref), (rs, H, W, h, w, ch, cw, top, left)

def test_windowed_resize_falls_back_when_pillow_disagrees(hf, photos, monkeypatch):
    import deit_scratch.preprocessing as pp
    monkeypatch.setattr(pp, "_pil_horizontal_first", lambda W, H, w, h: True)     # a wrong idea of Pillow's pass order
    monkeypatch.setattr(pp, "_window_ok", {})
    assert not pp._window_works(Image.Resampling.BICUBIC)
    assert_identical(hf(photos, return_tensors="pt").pixel_values, DeiTImageProcessor()(photos, return_tensors="pt").pixel_values)

def _child(q, p, ims): q.put(p(ims, return_tensors="np").pixel_values)

@pytest.mark.slow
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_forked_child_processes_batches():
    # a DataLoader worker forked after the parent used its thread pool must not wait on the parent's threads
    import multiprocessing as mp
    p, ims = DeiTImageProcessor(), [Image.fromarray(rand_u8(120, 90, 3)) for _ in range(6)]
    parent = p(ims, return_tensors="np").pixel_values
    ctx = mp.get_context("fork"); q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(q, p, ims)); proc.start()
    try: child = q.get(timeout=60)
    finally: proc.join(timeout=10)
    assert_identical(parent, child)

@pytest.mark.slow
def test_from_pretrained_hub_id_from_the_local_cache(tmp_path):
    # a hub id resolves through huggingface_hub's cache, without network (HF_HUB_OFFLINE=1)
    pytest.importorskip("huggingface_hub")
    import subprocess, sys, os
    snap = tmp_path / "hub" / "models--facebook--deit-tiny-distilled-patch16-224" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    DeiTImageProcessor(**HUB_MEAN_STD).save_pretrained(snap)
    (snap.parents[1] / "refs").mkdir(); (snap.parents[1] / "refs" / "main").write_text("0" * 40)
    code = ("from deit_scratch.image_processor import DeiTImageProcessor as P; "
            "print(P.from_pretrained('facebook/deit-tiny-distilled-patch16-224').image_mean)")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(IMAGENET_DEFAULT_MEAN)
    code = "from deit_scratch.image_processor import DeiTImageProcessor as P; P.from_pretrained('facebook/not-there')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Cannot get preprocessor_config.json of 'facebook/not-there'" in out.stderr

def test_channel_mismatch_errors_say_which_way_to_convert():
    "A one-value mean on an RGB image asks for grey images; a three-value mean on a grey image asks for RGB"
    grey = Image.new("L", (8, 8), 128)
    with pytest.raises(ValueError, match="image_mean has 1 values but the image has 3 channel.*convert the images to grey first"):
        DeiTImageProcessor(image_mean=[0.5], image_std=[0.5], do_resize=False, do_center_crop=False)(grey.convert("RGB"))
    with pytest.raises(ValueError, match="image_mean has 3 values but the image has 1 channel.*do_convert_rgb=True"):
        DeiTImageProcessor(do_resize=False, do_center_crop=False, do_convert_rgb=False)(grey)
