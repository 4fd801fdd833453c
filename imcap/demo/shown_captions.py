"""One image captioned by each decoding rule the page shows, with its per-word attention figure
as a PNG data URL (what an `<img src>` takes)."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from imcap.captioner import Captioner, Decoding
from imcap.evaluation.attention_maps import caption_steps, draw_attention, encoder_view
from imcap.model.decoding_loop import caption_batches


@dataclass(frozen=True)
class ShownCaption:
    decoding: str  # the rule's name on the page: "greedy", "beam 3"
    caption: str
    attention_map: str | None  # data:image/png;base64,… ; None when the model has no attention


def png_data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@torch.inference_mode()
def caption_image(captioner: Captioner, image: Image.Image, decodings: Mapping[str, Decoding]
                  ) -> list[ShownCaption]:
    """The image is encoded once; each decoding rule reads the same features."""
    features = captioner.encoder(captioner.transform(image).unsqueeze(0).to(captioner.device))
    shown = encoder_view(image, captioner.transform.spec)
    results = []
    with tempfile.TemporaryDirectory(prefix="imcap-demo-") as tmp:
        for name, decoding in decodings.items():
            [caption] = caption_batches(decoding.decoder(captioner.model, captioner.vocab),
                                        [features], captioner.vocab)
            text = " ".join(caption.words)
            labels, maps = caption_steps(caption.words, caption.alphas, caption.ended)
            figure = None
            if maps is not None:
                figure = png_data_url(draw_attention(shown, labels, maps, Path(tmp, "map.png"),
                                                     title=f"{name}: {text}"))
            results.append(ShownCaption(name, text, figure))
    return results
