"""Scoring captions: BLEU the seed's way, the COCO caption metrics, per-word attention figures."""
