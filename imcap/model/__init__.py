"""The caption decoders (the LSTM with attention none / I / II, the Transformer, Up-Down) and
their decoding: greedy, sampling and batched beam search."""
