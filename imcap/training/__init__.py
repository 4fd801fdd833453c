"""Stage `train`: the training loop and its checkpoints."""
