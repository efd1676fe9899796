"""JPEG and WebP matched to a target size, on whole files or their entropy-coded data."""

import numpy as np
import PIL.features
import pytest
import torch

from vqvae.compare import encode_classic, entropy_coded_bytes, match_size


def test_jpeg_and_webp_sizes_without_headers_and_matched_to_a_target():
    image = (np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)
    d = encode_classic(image, "jpeg", 50)
    sos = d.index(b"\xff\xda")
    scan_start = sos + 2 + int.from_bytes(d[sos + 2 : sos + 4], "big")
    assert d.endswith(b"\xff\xd9") and entropy_coded_bytes(d) == len(d) - 2 - scan_start
    # a flat image has almost no scan data; the header (tables) stays over 100 bytes
    flat = encode_classic(np.zeros_like(image), "jpeg", 50)
    assert entropy_coded_bytes(flat) < 10 < 100 < len(flat) - entropy_coded_bytes(flat)
    w = encode_classic(image, "webp", 50)
    assert entropy_coded_bytes(w) == int.from_bytes(w[16:20], "little") - 10 == len(w) - 30
    with pytest.raises(ValueError, match="not a JPEG or WebP"):
        entropy_coded_bytes(b"VQZ\x01")
    with pytest.raises(ValueError, match="truncated JPEG"):
        entropy_coded_bytes(d[:-2])
    # the quality whose size is closest to the target, full files or data alone
    sizes = {q: len(encode_classic(image, "jpeg", q)) for q in range(1, 101)}
    for target in (0, 400, 600, 10_000):
        m = match_size(image, target, "jpeg")
        best = min(abs(s - target) for s in sizes.values())
        assert abs(m.file_bytes - target) == best and m.file_bytes == sizes[m.quality]
    m = match_size(torch.from_numpy(image)[None].float() / 255, 300, "webp", headerless=True)
    assert m.format == "webp" and m.data_bytes == entropy_coded_bytes(m.data)
    assert m.image.shape == (28, 28) and m.image.dtype == np.uint8
    assert abs(m.data_bytes - 300) <= 60
    rgb = np.stack([image] * 3, -1)
    assert match_size(rgb, 500, "jpeg").image.shape == (28, 28, 3)
    with pytest.raises(ValueError, match="format must be one of jpeg, webp"):
        encode_classic(image, "png", 50)
    with pytest.raises(ValueError, match=r"quality must be an int in \[1, 100\]"):
        encode_classic(image, "jpeg", 0)


@pytest.mark.skipif(not PIL.features.check("avif"), reason="this Pillow cannot write AVIF")
def test_avif_matched_to_a_target_and_its_av1_data_measured():
    import skimage.data

    image = skimage.data.chelsea()[:96, :128]
    a = encode_classic(image, "avif", 50)
    # ISO-BMFF: the AV1 data is the mdat box's payload; ftyp, meta and the rest are header
    i = a.index(b"mdat") - 4
    assert entropy_coded_bytes(a) == int.from_bytes(a[i : i + 4], "big") - 8 > len(a) // 2
    sizes = {q: len(encode_classic(image, "avif", q)) for q in (1, 50, 100)}
    assert sizes[1] < sizes[50] < sizes[100]  # quality moves the size
    m = match_size(image, 2000, "avif")
    assert m.format == "avif" and m.image.shape == image.shape
    assert abs(m.file_bytes - 2000) < 0.2 * 2000
    assert np.abs(m.image.astype(int) - image).mean() < 20  # a picture of the cat, not noise
