"""imcap: a reproducible image-captioning pipeline (CNN features, LSTM decoder with attention)."""

__version__ = "0.1.0"
