"""The Reconstruct tab's codec panel: the current image as a ``.vqz`` file (range-coded under
the model's prior, vqvae.codec) beside JPEG and WebP squeezed to the same size; its
rate-distortion chart against JPEG, WebP and AVIF over their qualities; and a ``.vqz``
upload decoded. A photo's file is made at the rate chosen, by the encoder chosen (the
nearest codes, or codes chosen for their bits too, after refining the latents or not)."""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import numpy as np
import PIL.Image
import torch

import vqvae
from vqvae import codec, compare, images, rd, viz

from .. import inputs
from ..context import Context
from ..files import file_stem
from ..guards import clear_errors
from ..settings import DISPLAY, MAX_VQZ_BYTES, REFINE_PIXEL_STEPS
from ..store import Model
from ..ui import PIX, bind, public

# What JPEG and WebP are matched to: the whole .vqz file, or its payload against their
# entropy-coded data (at a few dozen bytes a JPEG's tables alone outweigh a whole .vqz).
MATCH = ("whole file", "without headers")
# How a photo's codes are chosen: the nearest codes (compressing within about a second);
# codes chosen for their bits too (vqvae.codec.rdo, about 1.4 times as long, smaller files); or
# those after the latents are refined (vqvae.codec.refine, REFINE_PIXEL_STEPS a call: slow)
ENCODERS = ("nearest codes", "rate-distortion optimised", "optimised + refined")


class Encoder(NamedTuple):
    """How a photo's codes are chosen: the arguments of codec.compress_image, and in words."""

    rdo: float
    refine: int
    words: str

    @classmethod
    def named(cls, name, pixels: int, files: int = 1) -> Encoder:
        """The encoder ``name`` (one of ENCODERS; None: the nearest codes) for ``files``
        files of a photo of ``pixels`` pixels: the refinement's steps are what
        REFINE_PIXEL_STEPS leaves each file, at most codec.REFINE_STEPS."""
        if name is None or name == "":
            name = ENCODERS[0]
        if not isinstance(name, str) or name not in ENCODERS:
            raise gr.Error(f"encoder must be one of {', '.join(ENCODERS)}; got {name!r:.40}.")
        if name == ENCODERS[0]:
            return cls(0.0, 0, "the nearest codes")
        rdo = codec.RDO_WEIGHT
        words = f"codes chosen for their error + {rdo:g} × their bits"
        if name == ENCODERS[1]:
            return cls(rdo, 0, words)
        steps = min(codec.REFINE_STEPS, REFINE_PIXEL_STEPS // (pixels * files))
        if steps == 0:
            return cls(rdo, 0, words + " (the photo is too large to refine here)")
        return cls(rdo, steps, words + f", latents refined {steps} step{'s' * (steps > 1)}")


class Compressed(NamedTuple):
    sizes: str  # Markdown: the code's sizes, and JPEG / WebP at the matched size
    vqz: str | None  # path of the .vqz file; None when the model has no prior
    jpeg: PIL.Image.Image  # the input as a JPEG of about the .vqz's size, decoded, enlarged
    webp: PIL.Image.Image  # the same as WebP
    decoded: PIL.Image.Image  # what the .vqz (or the plain codes) decode to, enlarged alike


class RateCurves(NamedTuple):
    chart: object  # a Plotly figure: bits per pixel against PSNR, this image's curves
    points: str  # Markdown: the codec's point(s) against each format at equal PSNR


class Decompressed(NamedTuple):
    image: PIL.Image.Image  # the decoded image, enlarged
    details: str  # Markdown: the file's sizes, its class


class Coded(NamedTuple):
    """An image's codes as a file, or as plain codes when the model has no prior."""

    rows: list  # Markdown table rows: bits under the prior, the file
    file_bytes: int  # whole file (or the plain codes' bytes)
    data_bytes: int  # payload (the same without a prior)
    label: str  # what the VQ-VAE row of the comparison calls it
    data: bytes | None  # the .vqz file


class SizeRow:
    """One row of the sizes table: bits, bytes, bits per pixel and how many times smaller
    than the input's PNG."""

    def __init__(self, pixels: int, png_bytes: int):
        self.pixels, self.png_bytes = pixels, png_bytes

    def __call__(self, what: str, bits: float, bytes_) -> str:
        b = f"{bytes_:,}" if isinstance(bytes_, int) else f"{bytes_:,.1f}"
        ratio = f"{8 * self.png_bytes / bits:.1f}×" if bits else ""
        return f"| {what} | {bits:,.0f} | {b} | {bits / self.pixels:.3f} | {ratio} |"


def _png_bytes(x: torch.Tensor, optimize: bool = True) -> int:
    """Bytes of the image as PNG (``optimize``: Pillow's smallest, slow on a photo)."""
    png = io.BytesIO()
    PIL.Image.fromarray(images.to_uint8(x[0])).save(png, format="PNG", optimize=optimize)
    return png.tell()


class Codec:
    """The codec panel's events."""

    def __init__(self, ctx: Context):
        self.models = ctx.models
        self.files = ctx.files
        self.lock = ctx.codec_lock

    def _coded_input(self, m: Model, image) -> tuple[torch.Tensor, bool]:
        """(the image the panel codes (1, C, H, W), whether as a photo). As a photo, at its
        own size under the model's grid prior (format 3), when the model has one, unless it
        is a thumbnail (the model's training size) the raster prior codes (format 2);
        otherwise as the model's input, as /reconstruct reads it. The file is read once
        (:meth:`_read`)."""
        im = self._read(m, image)
        S = m.config.image_size
        if m.grid_prior is not None and not (m.prior is not None and im.size == (S, S)):
            return inputs.photo_input(m, im, announce=False), True
        return inputs.model_input(m, im, announce=False, models=self.models), False

    def _read(self, m: Model, image) -> PIL.Image.Image:
        """The image a file holds. A whole-number nearest-neighbour enlargement of an S x S
        image (the *Input* the Reconstruct tab shows) is reduced back to that image,
        exactly."""
        S = m.config.image_size
        if image is None:
            raise gr.Error("No image: upload one, or reconstruct one first.")
        if not isinstance(image, (str, Path, np.ndarray, PIL.Image.Image)):
            raise gr.Error("An image is a file path or an array.", title="Unusable image")
        try:
            im, _ = images.load_image(image)
        except images.ImageError as e:
            raise gr.Error(str(e), title="Unusable image") from e
        k = im.width // S
        if k > 1 and im.size == (S * k, S * k):
            a = np.asarray(im)
            small = a[k // 2 :: k, k // 2 :: k]
            if np.array_equal(small.repeat(k, 0).repeat(k, 1), a):
                im = PIL.Image.fromarray(small)
        return im

    @staticmethod
    def _rate(m: Model, rate) -> int:
        """The index in vqvae.codec.rates of the rate named ``rate`` (None: the highest)."""
        names = [r.name for r in codec.rates(m.model)]
        if rate is None or rate == "":
            return len(names) - 1
        if not isinstance(rate, str) or rate not in names:
            raise gr.Error(f"rate must be one of {', '.join(names)}; got {rate!r:.40}.")
        return names.index(rate)

    def _compress_photo(
        self, m: Model, x: torch.Tensor, rate, match: str, image, enc: Encoder
    ) -> Compressed:
        """A photo at its own size as a format 3 .vqz file at ``rate`` by ``enc``, its
        sizes, and JPEG and WebP matched to it."""
        i = self._rate(m, rate)
        r = codec.rates(m.model)[i]
        H, W = x.shape[-2:]
        with self.lock:
            data, recon = codec.compress_image(
                m.model, m.grid_prior, x, rate=i, decoded=True, rdo=enc.rdo, refine=enc.refine
            )
        hd = codec.read_photo_header(data)
        row = SizeRow(H * W, _png_bytes(x, optimize=False))
        h, w = vqvae.grid.grid_shape(r.coded_size((H, W)), m.config.downsample)
        plain = h * w * r.stages * math.log2(m.config.codebook_size)
        payload = len(data) - hd.header_bytes
        lines = [
            f"**Sizes** ({W}×{H} = {H * W:,} pixels, at {r.name}; {enc.words})\n",
            "| | bits | bytes | bits / pixel | PNG is |",
            "|---|--:|--:|--:|--:|",
            row(
                f"codes, plain ({r.stages}·{h}·{w}·log2 {m.config.codebook_size})", plain, plain / 8
            ),  # fmt: skip
            row(
                f"**.vqz file** ({hd.header_bytes} header + {payload} payload, the grid prior)",
                8 * len(data),
                len(data),
            ),  # fmt: skip
            row("the input as PNG (lossless)", 8 * row.png_bytes, row.png_bytes),
        ]
        coded = Coded([], len(data), payload, f".vqz, {r.name}", data)
        path = self.files.new(codec.SUFFIX, name=file_stem(image) or "image")
        Path(path).write_bytes(data)
        cmp, (jpeg, webp, decoded) = self._comparison(x, recon, coded, headerless=match == MATCH[1])
        return Compressed("\n".join(lines) + "\n".join(cmp), path, jpeg, webp, decoded)

    def _code(self, m: Model, codes: torch.Tensor, row: SizeRow) -> Coded:
        """The codes as a .vqz file under the model's prior (the class that makes the file
        smallest), or as plain codes without one."""
        prior = m.prior
        if prior is None:
            plain = math.ceil(m.config.bits_per_image / 8)
            return Coded([], plain, plain, "codes, plain", None)
        with self.lock:
            label = codec.cheapest_labels(prior, codes)[0]
            data = codec.compress_codes(prior, codes, label, model=m.model)[0]
        with torch.inference_mode():
            nll = float(prior.nll_bits(codes, label)[0])
        info = codec.read_header(data)
        if prior.num_classes:
            cls = prior.config.class_name(label)
            what = f"codes under the prior, class {cls} (their NLL + the class)"
            nll += codec.class_bits(prior)
        else:
            what = "codes under the prior (their NLL)"
        rows = [
            row(what, nll, nll / 8),
            row(
                f"**.vqz file** ({info.header_bytes} header + {info.payload_bytes} payload)",
                8 * info.total_bytes,
                info.total_bytes,
            ),
        ]
        return Coded(rows, info.total_bytes, info.payload_bytes, ".vqz", data)

    @staticmethod
    def _comparison(x, recon, coded: Coded, headerless: bool) -> tuple[list, list]:
        """Markdown rows of the VQ-VAE against JPEG and WebP at the matched size, and the
        JPEG, WebP and VQ-VAE images (enlarged alike)."""
        target = coded.data_bytes if headerless else coded.file_bytes

        def quality(y: torch.Tensor) -> tuple[float, float]:
            return float(vqvae.psnr(x, y)[0]), float(vqvae.ssim(x, y)[0])

        what = "payload / entropy-coded data" if headerless else "whole files"
        rows = [
            f"\n\n**At the same size** (matched on {what}: {target} bytes)\n",
            "| | quality | file bytes | without headers | PSNR (dB) | SSIM |",
            "|---|--:|--:|--:|--:|--:|",
            "| VQ-VAE ({}) | | {} | {} | {:.2f} | {:.3f} |".format(
                coded.label, coded.file_bytes, coded.data_bytes, *quality(recon)
            ),
        ]
        shown = []
        for fmt in compare.FORMATS:
            sm = compare.match_size(x[0], target, fmt, headerless=headerless)
            y = torch.tensor(sm.image).float().div(255.0)  # (a read-only array)
            y = y[None, None] if y.dim() == 2 else y.permute(2, 0, 1)[None]
            got = sm.data_bytes if headerless else sm.file_bytes
            note = " (the lowest quality; still larger)" if sm.quality == 1 and got > target else ""
            name = fmt.upper() if fmt == "jpeg" else "WebP"
            rows.append(
                "| {}{} | {} | {} | {} | {:.2f} | {:.3f} |".format(
                    name, note, sm.quality, sm.file_bytes, sm.data_bytes, *quality(y)
                )
            )
            shown.append(images.enlarge(sm.image, DISPLAY))
        shown.append(images.enlarge(recon[0], DISPLAY))
        return rows, shown

    @clear_errors
    def compress(
        self, image, model_name: str, match: str = MATCH[0], rate=None, encoder=None
    ) -> Compressed:
        """image -> its .vqz file under the model's prior, a table of sizes (plain code
        bits, bits under the prior, the file's bytes, bits per pixel, the ratio to the
        input's PNG), and JPEG and WebP of the input at the quality whose size is closest
        to the .vqz's (``match``: "whole file" or "without headers"), with PSNR and SSIM.
        Without a prior: no file; JPEG and WebP are matched to the plain code bits. The
        file is named after ``image`` (photo.png -> photo.vqz; the Input shown is stored
        under its upload's or example's name: files.named). A photo (not the model's
        training size) of a model with a grid prior is coded at its own size at ``rate``
        (a name of vqvae.codec.rates; None: the highest), as a format 3 file, its codes
        chosen by ``encoder`` (a name of ENCODERS; None: the nearest codes; a thumbnail's
        are the nearest, under the raster prior)."""
        m = self.models.get(model_name)
        if not isinstance(match, str) or match not in MATCH:
            raise gr.Error(f"match must be one of {', '.join(MATCH)}, got {match!r:.30}.")
        x, photo = self._coded_input(m, image)
        enc = Encoder.named(encoder, x.shape[-2] * x.shape[-1])  # checked whatever the image
        if photo:
            return self._compress_photo(m, x, rate, match, image, enc)
        with torch.inference_mode():
            codes = m.model.encode(x)
            recon = m.model.decode(codes)
        c = m.config
        pixels = c.image_size * c.image_size
        row = SizeRow(pixels, _png_bytes(x))
        coded = self._code(m, codes, row)
        head = f"**Sizes** ({c.image_size}×{c.image_size} = {pixels:,} pixels)\n\n"
        if m.prior is None:
            head = m.no_prior + "\n\n" + head
        plain = f"codes, plain ({c.latent_size}·{c.latent_size}·log2 {c.codebook_size})"
        lines = [
            "| | bits | bytes | bits / pixel | PNG is |",
            "|---|--:|--:|--:|--:|",
            row(plain, c.bits_per_image, c.bits_per_image / 8),
            *coded.rows,
            row("the input as PNG (lossless)", 8 * row.png_bytes, row.png_bytes),
        ]
        vqz_path = None
        if coded.data is not None:
            vqz_path = self.files.new(codec.SUFFIX, name=file_stem(image) or "image")
            Path(vqz_path).write_bytes(coded.data)
        cmp, (jpeg, webp, decoded) = self._comparison(x, recon, coded, headerless=match == MATCH[1])
        return Compressed(head + "\n".join(lines) + "\n".join(cmp), vqz_path, jpeg, webp, decoded)

    @clear_errors
    def compare_rates(self, image, model_name: str, encoder=None) -> RateCurves:
        """image -> the rate-distortion chart of the image the panel compresses: JPEG, WebP
        and AVIF (where Pillow writes it) at qualities compare.QUALITIES, whole files, and
        the codec's operating points (vqvae.codec.operating_points: the .vqz file, a
        photo's at every rate by ``encoder``, a name of ENCODERS, or the plain codes without
        a prior), bits per pixel against PSNR; and a table of each codec point against each
        format at the same PSNR."""
        m = self.models.get(model_name)
        x, photo = self._coded_input(m, image)  # what compress codes: a photo at its own size
        H, W = x.shape[-2:]
        files = len(codec.rates(m.model)) if photo else 1
        enc = Encoder.named(encoder, H * W, files)  # checked whatever the image
        if not photo:  # a thumbnail under the raster prior: its nearest codes
            enc = Encoder.named(None, H * W)
        with self.lock:
            curves = rd.image_curves(x[0], m.model, m.prior, grid_prior=m.grid_prior,
                                     rdo=enc.rdo, refine=enc.refine)  # fmt: skip
        key, _ = rd.metric_keys(x.shape[1])
        title = f"This image ({W}×{H} px): bits per pixel against PSNR"
        return RateCurves(viz.rd_figure(curves, key, title=title), self._rate_table(curves, key))

    @staticmethod
    def _rate_table(curves: dict, key: str) -> str:
        """Markdown: each codec point, and each format's bits at its PSNR (interpolated)."""
        formats = [n for n in curves if "quality" in curves[n]]
        lines = [
            "| | bits / pixel | PSNR (dB) | "
            + " | ".join(f"{f} at that PSNR" for f in formats)
            + " |",
            "|---|--:|--:|" + "--:|" * len(formats),
        ]
        for name, c in curves.items():
            if "rate" not in c:
                continue
            changes = [rd.rate_changes(c, curves[f], key) for f in formats]
            for i, (rate, bpp, q) in enumerate(zip(c["rate"], c["bpp"], c[key], strict=True)):
                cells = [
                    "out of its range"
                    if ch[i] is None
                    else f"{bpp / (1 + ch[i] / 100):.3f} ({ch[i]:+.0f} %)"
                    for ch in changes
                ]
                lines.append(
                    f"| {name} ({rate}) | {bpp:.3f} | {q:.2f} | " + " | ".join(cells) + " |"
                )
        note = (
            "\n\nEach format's bits per pixel at the codec's PSNR, interpolated between its "
            "qualities (in brackets: the codec's bits against them; whole files)."
        )
        return "\n".join(lines) + note

    @staticmethod
    def _read_upload(file) -> bytes:
        if file is None:
            raise gr.Error("No file: upload a .vqz file.")
        if not isinstance(file, (str, Path)):
            raise gr.Error("A .vqz file is given as a file.")
        try:
            size = os.path.getsize(file)
            if size > MAX_VQZ_BYTES:
                raise gr.Error(
                    f"The file has {size:,} bytes: a .vqz file has at most "
                    f"{MAX_VQZ_BYTES // 1024} kB (most have a few dozen bytes)."
                )
            return Path(file).read_bytes()[: MAX_VQZ_BYTES + 1]
        except OSError:
            raise gr.Error("The uploaded file could not be read.") from None

    @clear_errors
    def decompress(self, file, model_name: str) -> Decompressed:
        """A .vqz file (path, at most MAX_VQZ_BYTES) -> the image it decodes to with the
        model and its prior (enlarged), and what its header says. Files for another model
        or prior, truncated, corrupted or not .vqz at all are answered with gr.Error."""
        m = self.models.get(model_name)
        data = self._read_upload(file)
        if codec.photo.is_photo_file(data):
            return self._decompress_photo(m, data)
        if m.prior is None:
            raise gr.Error(
                inputs.no_prior_text(m) + f" Choose a model that has one{self._made_by(data, m)}."
            )
        try:
            info = codec.read_header(data)
            with self.lock:
                codes, labels = codec.decompress_codes(m.prior, data, model=m.model)
        except ValueError as e:
            raise gr.Error(self._refusal(m, data, e)) from None
        with torch.inference_mode():
            x = m.model.decode(codes)
        cls = m.prior.config.class_name(int(labels[0]))
        how = ", coded in one pass" if info.one_pass else ""
        details = (
            f"Decoded a {info.total_bytes}-byte file (format {info.version}{how}; "
            f"{info.header_bytes} header + {info.payload_bytes} payload): "
            f"{codes.shape[1]}×{codes.shape[2]} codes, class: {cls}."
        )
        return Decompressed(images.enlarge(x[0], DISPLAY), details)

    def _decompress_photo(self, m: Model, data: bytes) -> Decompressed:
        """A format 3 file (a photo at a rate) decoded with the model's grid prior."""
        if m.grid_prior is None:
            raise gr.Error(
                f"This is a photo's .vqz file (format 3): it decodes with a grid prior, which "
                f"model {m.name!r} has none of. Choose the model it was made with"
                f"{self._made_by(data, m)}."
            )
        try:
            with self.lock:
                x = codec.decompress_image(m.model, m.grid_prior, data)
            hd = codec.read_photo_header(data)
        except ValueError as e:
            raise gr.Error(self._refusal(m, data, e)) from None
        details = (
            f"Decoded a {len(data):,}-byte photo file (format 3, {hd.rate.name}): "
            f"{hd.width}×{hd.height} pixels, {8 * len(data) / (hd.width * hd.height):.3f} "
            "bits per pixel."
        )
        return Decompressed(PIL.Image.fromarray(images.to_uint8(x[0])), details)

    def _refusal(self, m: Model, data: bytes, e: ValueError) -> str:
        """Why ``data`` does not decode with ``m``, naming the model that made it, if any."""
        why = f"This file cannot be decoded with model {m.name!r}"
        if not isinstance(e, codec.ForeignFileError):
            return f"{why}: {e}."
        who = self._identify(data, m, e.tried)
        note = who.note("choose {name}", "choose the model it was made with")
        return f"{why}: {e.reason}; {note}."

    def _made_by(self, data: bytes, m: Model) -> str:
        """A parenthesis naming the other model that made ``data`` ("" if none did)."""
        who = self._identify(data, m)
        return f" ({who.note('choose {name}')})" if who.owner else ""

    def _identify(self, data: bytes, tried: Model, fps: tuple | None = None) -> codec.Identity:
        """Which of the app's other models made ``data`` (codec.identify: its ids, or where
        they are narrow its checksum; ``fps``, the fingerprints ``tried`` decoded it with,
        let it say whether the VQ-VAE or only the prior differs)."""
        grid = codec.photo.is_photo_file(data)
        candidates = []
        for name in self.models.names():
            other = self.models.get(name) if name != tried.name else None
            prior = None if other is None else other.grid_prior if grid else other.prior
            if prior is not None:
                candidates.append(codec.owners.candidate(name, other.model, prior))
        with self.lock:
            return codec.identify(data, candidates, exclude=fps)


@dataclass
class CodecPanel:
    match: gr.Radio
    rate: gr.Dropdown  # a photo's rate (vqvae.codec.rates of the model)
    encoder: gr.Radio  # how a photo's codes are chosen (ENCODERS)
    compressed: dict  # the components of a Compressed, by field
    compare_rates: gr.Button
    curves: dict  # the components of a RateCurves, by field
    vqz_file: gr.File
    decompressed: dict  # the components of a Decompressed, by field


def layout() -> CodecPanel:
    """The panel, laid out under the Reconstruct tab's results."""
    # the controls in a row above the three pictures: beside them, a column of controls
    # taller than a wide photo's pictures left a band of empty space under the pictures
    with gr.Row(equal_height=True):
        rate = gr.Dropdown(  # choices set per model; API clients send a rate's name
            [], value=None, allow_custom_value=True, elem_id="vqz-rate",
            label="Rate of a photo's .vqz",
            info="a photo is coded at its own size; the lowest rate codes it at half size",
            visible=False,
        )  # fmt: skip
        encoder = gr.Radio(  # shown with the rates
            list(ENCODERS), value=ENCODERS[0], elem_id="vqz-encoder",
            label="Encoder of a photo's .vqz",
            info="optimised: smaller files, 1.4× as long; refined: a closer image for a few "
            "more bits, seconds",
            visible=False, scale=2,
        )  # fmt: skip
        match = gr.Radio(
            list(MATCH),
            value=MATCH[0],
            elem_id="match",
            label="Match JPEG and WebP to the .vqz's size:",
            info="whole file: the bytes a download takes; without headers: only the "
            "coded picture, leaving out each format's fixed header (JPEG's alone outweighs "
            "a thumbnail's .vqz)",
            scale=2,
        )
        with gr.Column(min_width=160):
            vqz = gr.DownloadButton("Download .vqz", elem_id="dl-vqz", size="sm")
            compare_rates = gr.Button("Compare rates", elem_id="compare-rates", size="sm")
    small = dict(height=240, elem_classes=PIX, interactive=False, format="png",
                 buttons=["download", "fullscreen"])  # fmt: skip
    with gr.Row(equal_height=True):
        coded = gr.Image(elem_id="vqz-decoded", label=".vqz decoded", **small)
        jpeg = gr.Image(elem_id="jpeg", label="JPEG", **small)
        webp = gr.Image(elem_id="webp", label="WebP", **small)
    sizes = gr.Markdown(elem_id="codec-sizes")
    with gr.Accordion("Rate-distortion chart", open=True, elem_id="rd-box"):
        chart = gr.Plot(elem_id="rd-chart", show_label=False)
        points = gr.Markdown(
            "*Compare rates* draws this image's .vqz beside JPEG, WebP and AVIF over their "
            "qualities.",
            elem_id="rd-points",
        )
    with gr.Accordion("Decode a .vqz file", open=False):
        with gr.Row():
            vqz_file = gr.File(
                elem_id="vqz-file",
                label=f".vqz file (at most {MAX_VQZ_BYTES // 1024} kB)",
                file_types=[codec.SUFFIX],
                type="filepath",
                height=140,
            )
            decoded = gr.Image(elem_id="decoded", label="Decoded", **small)
            details = gr.Markdown(elem_id="decoded-md")
    return CodecPanel(
        match,
        rate,
        encoder,
        dict(sizes=sizes, vqz=vqz, jpeg=jpeg, webp=webp, decoded=coded),
        compare_rates,
        dict(chart=chart, points=points),
        vqz_file,
        dict(image=decoded, details=details),
    )


def connect(h: Codec, panel: CodecPanel, model: gr.Dropdown, original: gr.Image) -> None:
    """The panel's events; it follows ``original`` (the input as the model sees it)."""
    # The panel follows each new input as an event of its own, so /reconstruct stays as fast
    # as without it (the prior's coding and ~20 JPEG/WebP encodes run after it). As the API,
    # /compress takes any image, or the Input shown above.
    gr.on(
        [original.change, panel.match.change, panel.rate.input, panel.encoder.input],
        h.compress,
        [original, model, panel.match, panel.rate, panel.encoder],
        bind(Compressed, **panel.compressed),
        trigger_mode="always_last",
        show_progress="minimal",
        **public("compress", expensive=True),
    )
    panel.compare_rates.click(
        h.compare_rates,
        [original, model, panel.encoder],
        bind(RateCurves, **panel.curves),
        **public("compare_rates", expensive=True),
    )
    panel.vqz_file.upload(
        h.decompress,
        [panel.vqz_file, model],
        bind(Decompressed, **panel.decompressed),
        **public("decompress", expensive=True),
    )
