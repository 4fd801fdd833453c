"""Stage `features`: CNN encoders, image decoding, extraction (one GPU or sharded) and the HDF5
feature store; `splits` joins one split's features with its encoded captions."""
