"""Caption tokenisation: lowercase words, punctuation dropped, no nltk data download needed."""

from __future__ import annotations

import re

# Words are runs of letters/digits, optionally joined by an apostrophe ("man's", "don't")
# or a hyphen ("t-shirt"); everything else (punctuation, symbols) separates tokens.
_WORD = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Split a caption into lowercase word tokens.

    >>> tokenize("A dog's toy, in the T-shirt!")
    ['a', "dog's", 'toy', 'in', 'the', 't-shirt']
    """
    return _WORD.findall(text.lower())
