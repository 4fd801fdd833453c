"""Paths resolved against the links an archive creates, before any of it is written.

A link's text alone says little: `u1 -> d/..` looks like it stays inside, but if `d -> .` was
extracted before it, `u1` is the target's parent. `LinkTree` records every entry planned so far
and resolves a path component by component, following those links as the kernel would, so a
check made in memory holds for the files written afterwards.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

MAX_HOPS = 40  # links followed in one resolution, as Linux allows (more: a loop)

Parts = tuple[str, ...]


class LinkTree:
    """The entries planned so far: symlinks (with their text) and regular files."""

    def __init__(self) -> None:
        self._links: dict[Parts, str] = {}
        self._files: set[Parts] = set()

    def resolve(self, path: Sequence[str], base: Parts = ()) -> Parts | None:
        """`path`, relative to the folder `base`, with every link followed; None if it leaves
        the root (or loops)."""
        current = list(base)
        pending = deque(path)
        hops = 0
        while pending:
            part = pending.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if not current:
                    return None
                current.pop()
                continue
            current.append(part)
            link = self._links.get(tuple(current))
            if link is not None:
                hops += 1
                if hops > MAX_HOPS or link.startswith("/"):
                    return None
                current.pop()
                pending.extendleft(reversed(link.split("/")))
        return tuple(current)

    def add(self, where: Parts, kind: str, link: str = "") -> None:
        """Record an entry written at `where` (it replaces what was there)."""
        self._links.pop(where, None)
        self._files.discard(where)
        if kind == "symlink":
            self._links[where] = link
        elif kind in ("file", "hardlink"):
            self._files.add(where)

    def is_file(self, where: Parts) -> bool:
        return where in self._files
