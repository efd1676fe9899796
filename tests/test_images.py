"""vqvae.images.load_image and to_model_input: what they make of odd inputs, and the cost bound
for public uploads (any accepted input: at most 300 MB extra peak memory; the goal of 1.5 s of
decoding on an idle 2-core machine is checked only loosely, as times depend on the load)."""

import ctypes
import gc
import json
import os
import re
import time
import traceback
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from vqvae import images
from vqvae.images import ImageError, load_image, to_model_input

# -- the cost bound, measured in a child process ------------------------------------------------
#
# tracemalloc misses PIL's and numpy's C allocations, so the peak is the process's resident
# set high-water mark (VmHWM), reset before each case (Linux: /proc/self/clear_refs).

MB = 2**20
SIDE = 4000  # 4000 x 4000 = 16 MP, the decode limit


def _png_rgba(path: Path, side=(SIDE, SIDE)) -> Path:
    """Transparent, with one opaque white square: ~65 kB on disk, 64 MB decoded."""
    a = np.zeros((side[1], side[0], 4), np.uint8)
    a[1000:3000, 1000:3000] = 255
    PIL.Image.fromarray(a).save(path, compress_level=1)
    return path


def _png_gray16(path: Path) -> Path:
    a = np.zeros((SIDE, SIDE), np.uint16)
    a[1000:3000, 1000:3000] = 60000
    PIL.Image.fromarray(a).save(path, compress_level=1)
    return path


def _jpeg_48mp(path: Path) -> Path:
    im = PIL.Image.linear_gradient("L").resize((8000, 6000))
    im.save(path, quality=85)
    return path


def _gif_many_frames(path: Path, n: int) -> Path:
    """A GIF of ``n`` 1x1 frames, written byte by byte (15 bytes a frame)."""
    head = b"GIF89a" + bytes([1, 0, 1, 0, 0x80, 0, 0]) + bytes([0, 0, 0, 255, 255, 255])
    # image descriptor at (0, 0) size 1x1, LZW min code size 2, codes clear, 0, end
    frame = b"\x2c" + bytes([0, 0, 0, 0, 1, 0, 1, 0, 0]) + b"\x02\x02\x44\x01\x00"
    path.write_bytes(head + frame * n + b"\x3b")
    return path


def _half_transparent_uint16() -> np.ndarray:
    """Black, its top half transparent: 128 MB, as a user's 16-bit RGBA array."""
    a = np.zeros((SIDE, SIDE, 4), np.uint16)
    a[SIDE // 2 :, :, 3] = 65535
    return a


CASES = {  # name: (make(tmp_dir) -> source, accepted?)
    "transparent PNG, 16 MP": (lambda d: _png_rgba(d / "a.png"), True),
    "transparent PNG, 16 MP + a row": (lambda d: _png_rgba(d / "b.png", (SIDE, SIDE + 1)), False),
    "16-bit PNG, 16 MP": (lambda d: _png_gray16(d / "c.png"), True),
    "JPEG, 48 MP": (lambda d: _jpeg_48mp(d / "d.jpg"), True),
    "GIF of 1.5M frames": (lambda d: _gif_many_frames(d / "e.gif", 1_500_000), True),
    "uint16 RGBA array, 16 MP": (lambda d: _half_transparent_uint16(), True),
    "float32 RGB array, 16 MP": (lambda d: np.full((SIDE, SIDE, 3), 0.5, np.float32), True),
}


def _hwm_mb() -> tuple[float, float]:
    s = Path("/proc/self/status").read_text()
    rss, hwm = (int(re.search(k + r":\s+(\d+)", s).group(1)) for k in ("VmRSS", "VmHWM"))
    return rss / 1024, hwm / 1024


def _measure(names: list[str], tmp: Path, out) -> None:
    """Write one JSON line per case to ``out``: seconds, extra peak MB, outcome."""
    libc = ctypes.CDLL("libc.so.6")
    for name in names:
        source = CASES[name][0](tmp)
        gc.collect()
        libc.malloc_trim(0)  # hand freed heap back, or new allocations hide in it
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        base, _ = _hwm_mb()
        t = time.perf_counter()
        try:
            im, notes = load_image(source)
            x, _ = to_model_input(im, 3, 32)
            outcome = {"ok": True, "notes": notes, "shape": list(x.shape)}
        except ImageError as e:
            outcome = {"ok": False, "error": str(e)}
        seconds = time.perf_counter() - t
        extra = _hwm_mb()[1] - base
        del source
        out.write(json.dumps({"name": name, "s": seconds, "mb": extra, **outcome}) + "\n")


@pytest.fixture(scope="module")
def costs(tmp_path_factory):
    """Measured in a forked child (imports already done, its own memory high-water mark)."""
    if not (hasattr(os, "fork") and Path("/proc/self/clear_refs").exists()):
        pytest.skip("peak memory is measured through Linux's /proc/self/clear_refs")
    tmp = tmp_path_factory.mktemp("bombs")
    to_model_input(load_image(PIL.Image.new("RGBA", (40, 30)))[0], 3, 32)  # imports
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report through the pipe, exit without cleanup
        code = 1
        try:
            os.close(r)
            with os.fdopen(w, "w") as f:
                _measure(list(CASES), tmp, f)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        lines = f.read().splitlines()
    assert os.waitpid(pid, 0)[1] == 0, "the measuring child failed (see stderr)"
    out = {}
    for line in lines:
        d = json.loads(line)
        print(f"{d['name']:32s} {d['s']:6.2f} s  {d['mb']:6.0f} MB  {d.get('error', '')}")
        out[d["name"]] = d
    return out


@pytest.mark.parametrize("name", CASES)
def test_any_input_costs_at_most_300_mb(costs, name):
    d = costs[name]
    assert d["ok"] == CASES[name][1], d
    assert d["mb"] < 300, f"{name}: {d['mb']:.0f} MB extra peak memory"
    # the goal is 1.5 s on an idle 2-core machine, but a unit test's time depends on the
    # machine's load (9.9 s measured on a busy one): only a guard against a runaway decode
    assert d["s"] < 60.0, f"{name}: {d['s']:.2f} s"


def test_what_the_bombs_turn_into(costs):
    assert "limit is 16 megapixels" in costs["transparent PNG, 16 MP + a row"]["error"]
    assert costs["transparent PNG, 16 MP"]["notes"] == ["transparent pixels composited on black"]
    assert costs["16-bit PNG, 16 MP"]["notes"] == ["I;16 image scaled to 8 bits"]
    assert costs["JPEG, 48 MP"]["notes"] == ["large photo (8000x6000) decoded at 4000x3000"]
    assert costs["GIF of 1.5M frames"]["notes"] == ["animated image: used its first frame"]
    assert costs["uint16 RGBA array, 16 MP"]["notes"] == [
        "uint16 image scaled to 8 bits",
        "transparent pixels composited on white",
    ]


# -- what inputs turn into -----------------------------------------------------------------------


@pytest.fixture
def small_blocks(monkeypatch):
    """Convert 64 pixels at a time, so that small images cross many block boundaries."""
    monkeypatch.setattr(images, "_BLOCK_PIXELS", 64)


def _rng_image(mode: str, size=(37, 23), seed=0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    bands = len(mode) if mode != "L" else 1
    a = rng.integers(0, 256, (size[1], size[0], bands), np.uint8)
    im = PIL.Image.fromarray(a.squeeze(-1) if bands == 1 else a)
    assert im.mode == mode
    return im


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
@pytest.mark.parametrize("bright", [True, False])
def test_transparency_is_composited_as_pil_does(small_blocks, mode, bright):
    im = _rng_image(mode)
    a = np.array(im)
    a[..., :-1] = a[..., :-1] // 4 + (191 if bright else 0)  # light or dark content
    im = PIL.Image.fromarray(a)
    out, notes = load_image(im)
    bg = (0, 0, 0, 255) if bright else (255, 255, 255, 255)
    rgba = im.convert("RGBA")
    ref = PIL.Image.alpha_composite(PIL.Image.new("RGBA", im.size, bg), rgba)
    assert out.mode == {"RGBA": "RGB", "LA": "L"}[mode]
    assert np.array_equal(np.asarray(out), np.asarray(ref.convert(out.mode)))
    assert notes == [f"transparent pixels composited on {'black' if bright else 'white'}"]


def test_opaque_alpha_is_dropped_silently():
    im = _rng_image("RGB").convert("RGBA")
    out, notes = load_image(im)
    assert out.mode == "RGB" and notes == []
    assert np.array_equal(np.asarray(out), np.asarray(im.convert("RGB")))


def test_16_bit_and_float_images_scale_to_8_bits(small_blocks):
    v = np.arange(0, 65536, 67, dtype=np.uint16)[: 37 * 23].reshape(23, 37)
    out, notes = load_image(PIL.Image.fromarray(v))  # mode I;16
    assert np.array_equal(np.asarray(out), np.round(v / 257.0).astype(np.uint8))
    assert notes == ["I;16 image scaled to 8 bits"]
    # the same values as an array, from Gradio or a user
    assert np.array_equal(np.asarray(load_image(v)[0]), np.asarray(out))
    f = np.linspace(0, 1, 37 * 23, dtype=np.float32).reshape(23, 37)
    expected = np.round(f.astype(np.float64) * 255).astype(np.uint8)
    for src in (f, PIL.Image.fromarray(f)):  # an array, and a mode F image
        out, notes = load_image(src)
        assert np.array_equal(np.asarray(out), expected)
        assert notes == []
    wide = np.full((5, 5), 1e6, np.float64)
    wide[0, 0] = 0
    assert np.asarray(load_image(wide)[0]).tolist()[0][:2] == [0, 255]


def test_float_image_file_with_nan_is_read_as_zero(tmp_path):
    f = np.full((6, 8), 0.5, np.float32)
    f[0, 0] = np.nan
    PIL.Image.fromarray(f).save(tmp_path / "f.tif")
    out = np.asarray(load_image(tmp_path / "f.tif")[0])
    assert out[0, 0] == 0 and (out.flat[1:] == 128).all()


@pytest.mark.parametrize(
    "array, words",
    [
        (np.full((4, 4), np.nan), "NaN or infinite"),
        (np.full((4, 4), "a"), "must hold numbers"),
        (np.zeros((4, 4, 2)), r"\(H, W\), \(H, W, 3\) or \(H, W, 4\)"),
        (np.zeros((0, 4)), r"\(H, W\)"),
    ],
)
def test_bad_arrays_are_clear_errors(array, words):
    with pytest.raises(ImageError, match=words):
        load_image(array)


def test_limits_are_checked_before_converting():
    big = np.broadcast_to(np.float64(0.5), (5, 4))  # no memory: the shape alone is too big
    with pytest.raises(ImageError, match=r"4x5 pixels; the limit is 0 megapixels"):
        load_image(big, max_decoded_pixels=19)
    assert load_image(big, max_decoded_pixels=20)[0].size == (4, 5)


def test_large_png_is_refused_from_its_header(tmp_path):
    path = tmp_path / "wide.png"
    PIL.Image.new("1", (3000, 2)).save(path)
    with pytest.raises(ImageError, match=r"3000x2 pixels; the limit is 0 megapixels \(0 for JPEG"):
        load_image(path, max_decoded_pixels=5000, max_pixels=5000)
    with pytest.raises(ImageError, match="limit is 0 megapixels"):
        load_image(path, max_decoded_pixels=5000, max_pixels=10**6)  # PNG: no reduced decode


def test_large_jpeg_decodes_at_reduced_scale(tmp_path):
    a = np.zeros((160, 240), np.uint8)
    a[:, 120:] = 255
    path = tmp_path / "photo.jpg"
    PIL.Image.fromarray(a).save(path, quality=95)
    im, notes = load_image(path, max_decoded_pixels=160 * 240 // 4, max_pixels=10**6)
    assert im.size == (120, 80) and notes == ["large photo (240x160) decoded at 120x80"]
    assert np.asarray(im)[:, :55].max() < 20 and np.asarray(im)[:, 65:].min() > 235
    im, _ = load_image(path, max_decoded_pixels=160 * 240 // 4 - 1, max_pixels=10**6)
    assert im.size == (60, 40), "the next scale down"
    with pytest.raises(ImageError, match="240x160 pixels; the limit is 0 megapixels"):
        load_image(path, max_decoded_pixels=100, max_pixels=160 * 240 - 1)


def test_many_frame_gif_gives_its_first_frame_at_once(tmp_path):
    path = _gif_many_frames(tmp_path / "many.gif", 200_000)  # 3 MB
    t = time.perf_counter()
    im, notes = load_image(path)
    seconds = time.perf_counter() - t
    print(f"200k-frame GIF: {seconds * 1000:.0f} ms")
    assert im.size == (1, 1) and np.asarray(im).max() == 0
    assert notes == ["animated image: used its first frame"]
    assert seconds < 0.3, "walking 200k frames takes ~0.7 s"


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [PIL.Image.new("L", (8, 8), v) for v in (10, 200, 90)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50)
    im, notes = load_image(tmp_path / "a.gif")
    assert np.asarray(im).max() == 10 and notes == ["animated image: used its first frame"]
    still, notes = load_image(frames[1])
    assert notes == [] and np.asarray(still).min() == 200


def test_callers_pil_image_is_not_modified():
    im = PIL.Image.new("RGB", (6, 4), (1, 2, 3))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    im.info["exif"] = exif.tobytes()
    out, _ = load_image(im)
    assert out.size == (4, 6) and im.size == (6, 4)


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (999, 1000), (100, 100), (50, 30)])
def test_model_input_is_the_centre_square_reduced(size):
    im = _rng_image("RGB", size, seed=1)
    x, inverted = to_model_input(im, 3, 16)
    w, h = size
    side = min(w, h)
    ref = im.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
    if side > 64:
        ref = ref.reduce(side // 32)
    ref = torch.from_numpy(np.asarray(ref.resize((16, 16), PIL.Image.BILINEAR), np.float32))
    assert x.shape == (1, 3, 16, 16) and not inverted
    # torchvision's antialiased resize vs PIL's: the same picture within rounding
    assert (x[0].permute(1, 2, 0) * 255 - ref).abs().mean() < 2.0


def test_dark_on_light_is_inverted_for_one_channel():
    a = np.full((40, 40), 255, np.uint8)
    a[10:30, 18:22] = 0
    x, inverted = to_model_input(load_image(a)[0], 1, 28)
    assert inverted and x[0, 0, 0, 0] == 0 and x[0, 0, 14, 14] > 0.9
    x, inverted = to_model_input(load_image(a)[0], 3, 28)
    assert not inverted and x[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]


def test_a_code_map_of_small_cells_is_its_colours_without_lines():
    """A photo's code map (a cell per 4 x 4 pixels): grid lines would take a quarter of every
    cell, so there are none; larger cells keep theirs."""
    from vqvae.images import code_map_image
    from vqvae.latent import color_code_map

    codes = np.random.default_rng(0).integers(0, 512, (30, 40))
    im = np.asarray(code_map_image(codes, 512, 4 * 40))
    colours = color_code_map(torch.as_tensor(codes), 512).numpy()
    assert np.array_equal(im, colours.repeat(4, 0).repeat(4, 1))
    lined = np.asarray(code_map_image(codes[:8, :8], 512, 8 * 8))
    assert (lined[8] == 255).all(), "a white line between the first two rows"
