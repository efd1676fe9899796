"""The VQ-VAE explorer, a Gradio app (also the Hugging Face Space's entry point).

    python app.py                                  # http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 8000 --models-dir pretrained/

The app lives in the ``explorer`` package: one module per tab under ``explorer/tabs``.
"""

from explorer import main

if __name__ == "__main__":
    main()
