"""The caption decoder (LSTM with attention none / I / II) and its decoding: greedy, sampling and
batched beam search."""
