"""imcap: a reproducible image-captioning pipeline (CNN features, LSTM decoder with attention)."""
