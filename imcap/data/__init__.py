"""Stages `download` and `vocab`: datasets normalised to the Karpathy caption format, the
vocabulary, encoded captions and the embedding matrix."""
