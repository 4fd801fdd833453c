"""`imcap demo`: a local web page where a user drops an image and sees its captions (greedy and
beam), the per-word attention maps and which model produced them. A FastAPI app (`app`) with
one static page and a JSON endpoint; uploads are checked before the model sees them
(`uploads`); the model is the one `imcap caption` loads (`imcap.captioner.Captioner`)."""
