"""The VQ-VAE explorer: a Gradio app over the ``vqvae`` library (``python app.py``).

Five tabs, one module each under ``explorer.tabs``: Reconstruct (upload, example or drawing
-> reconstruction and code map; with a prior, the image as a .vqz file beside JPEG and WebP at
the same size: ``tabs.codec``), Codebook, Edit codes, Sample, Interpolate. Every main action
has an API name (/reconstruct, /codebook, /edit, /interpolate, /code, /code_patches, /sample,
/resample, /compress, /decompress); see docs/api.md.

The app is a thin layer: the model maths is in ``vqvae``, image I/O in ``vqvae.images``,
figures in ``vqvae.viz``. Here: ``settings`` (every limit and size), ``store`` (the models),
``inputs`` (every event's inputs checked), ``guards`` (errors, untrusted uploads and values),
``files`` (what the app writes and receives), ``limits`` (request bodies, idle sessions),
``fairness`` (one expensive job per client in the queue), ``ui`` (how events and outputs are
declared), ``tabs`` and ``app`` (the wiring, ``launch``, ``main``).
Importing the package has no side effects on the process.
"""

from .app import Handlers, build_app, configure_process, launch, main

__all__ = ["Handlers", "build_app", "configure_process", "launch", "main"]
