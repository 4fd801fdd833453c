"""Captions of a scene: sentence frames filled with phrases, five distinct true ones per image.

Captions name colours, shapes and sizes, but also where objects are ("in the top left corner") and
how they relate ("a red circle above a blue square"), so a decoder that can attend to image regions
has something to gain over one that only sees a globally pooled vector.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from imcap.data.shapes.phrases import (
    NUMBERS,
    PRONOUN_FORMS,
    RELATION_WORDS,
    SIZE_WORDS,
    Unit,
    background,
    bare_cell_phrase,
    group_units,
    join,
    linking_verb,
    located,
    mentions,
    noun_phrase,
    position,
    prefix,
    there_is,
    true_relations,
)
from imcap.data.shapes.scene import Scene, pick
from imcap.data.text import tokenize

_MAX_TRIES = 2000
_FRAME_TRIES = 4

# A frame writes one caption (lower case, no full stop) for units in the given order, with sizes
# mentioned if ``sized``; None where it does not fit the scene.
_Frame = Callable[[list[Unit], np.random.Generator, bool], str | None]


def describe(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[str]:
    """Return ``n`` distinct captions (5-20 tokens each) that are true for ``scene``.

    Each caption comes from a randomly chosen sentence frame, with objects in random order, sizes
    mentioned or not, and varied wording of positions, relations and openings. A frame that gives
    too long a caption is retried a few times before another is drawn, so that long (positional)
    frames of 3-object scenes are not crowded out.
    """
    units = group_units(scene)
    captions: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for _ in range(_MAX_TRIES):
        frame = _FRAMES[int(rng.choice(len(_FRAMES), p=_FRAME_WEIGHTS))]
        raw = _caption_from(frame, units, rng)
        tokens = tuple(tokenize(raw)) if raw else ()
        if raw and tokens not in seen:
            seen.add(tokens)
            captions.append(raw)
            if len(captions) == n:
                return captions
    raise RuntimeError(f"could not find {n} distinct captions for {scene}")


def _caption_from(frame: _Frame, units: list[Unit], rng: np.random.Generator) -> str | None:
    """The first of up to ``_FRAME_TRIES`` captions from ``frame`` with 5-20 tokens, if any."""
    for _ in range(_FRAME_TRIES):
        order = [units[i] for i in rng.permutation(len(units))]
        text = frame(order, rng, bool(rng.random() < 0.5))
        if text is None:
            return None
        raw = text[0].upper() + text[1:] + "."
        if 5 <= len(tokenize(raw)) <= 20:
            return raw
    return None


def _frame_list(units: list[Unit], rng: np.random.Generator, sized: bool) -> str:
    """ "a red circle at the top and a blue star on the left" and variants."""
    body = join(mentions(units, rng, sized))
    return prefix(units, rng) + body + background(units, body, rng)


def _frame_is(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "the red circle is in the top left and the blue star is at the bottom"."""
    definite = bool(rng.random() < 0.7)
    parts = []
    for unit in units:
        where = position(unit, rng)
        if where.startswith("one "):
            return None
        parts.append(f"{noun_phrase(unit, rng, sized, definite)} {linking_verb(unit, rng)} {where}")
    return join(parts)


def _frame_relation(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "a red circle above a blue square (and a green star on the right)" and variants."""
    if len(units) < 2:
        return None
    relations = true_relations(units[0], units[1])
    if not relations:
        return None
    relation = pick(rng, RELATION_WORDS[pick(rng, relations)])
    first = noun_phrase(units[0], rng, sized)
    if rng.random() < 0.3:  # "the red circle is above the blue square"
        first = f"{noun_phrase(units[0], rng, sized, True)} {linking_verb(units[0], rng)}"
        text = f"{first} {relation} {noun_phrase(units[1], rng, sized, True)}"
    else:
        text = f"{first} {relation} {noun_phrase(units[1], rng, sized)}"
    if len(units) > 2:
        return f"{text} and {located(units[2], rng, sized)}"
    if text.startswith("the "):
        return text
    return pick(rng, ("", "", "", there_is(units[0]) + " ")) + text


def _frame_with(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "a red circle in the centre with a blue square below it (and a green star to its left)"."""
    if len(units) < 2:
        return None
    anchor = units[0]
    parts = []
    for other in units[1:]:
        relations = true_relations(anchor, other)
        if relations:
            pronoun = pick(rng, PRONOUN_FORMS[pick(rng, relations)][len(anchor) > 1])
            parts.append(f"{noun_phrase(other, rng, sized)} {pronoun}")
        elif parts:
            parts.append(located(other, rng, sized))
        else:
            return None
    return f"{located(anchor, rng, sized)} with {join(parts)}"


def _frame_position_first(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "in the centre there is a red circle and a blue square is at the bottom"."""
    positions = [position(u, rng) for u in units]
    if any(p.startswith("one ") for p in positions):  # "one at the top and one ..." reads badly
        return None
    first = units[0]
    links = [
        f" {there_is(first)} ",
        f" {linking_verb(first, rng)} ",
        f" {linking_verb(first, rng)} ",
    ]
    if len(units) == 1:
        links.append(", ")  # "at the top, a red circle"
    link = pick(rng, links)
    text = f"{positions[0]}{link}{noun_phrase(first, rng, sized)}"
    rest = [
        f"{noun_phrase(u, rng, sized)} {linking_verb(u, rng)} {p}"
        for u, p in zip(units[1:], positions[1:], strict=True)
    ]
    return join([text, *rest])


def _frame_terse(units: list[Unit], rng: np.random.Generator, sized: bool) -> str:
    """Article-less notes: "red circle top left, two blue stars top-right and center"."""
    parts = []
    for unit in units:
        noun = noun_phrase(unit, rng, sized)
        if len(unit) == 1:
            noun = noun.split(" ", 1)[1]  # drop the article
        places = join([bare_cell_phrase(o.row, o.col, rng) for o in unit])
        parts.append(f"{noun} {places}")
    return ", ".join(parts) if rng.random() < 0.5 else join(parts)


def _frame_unplaced(units: list[Unit], rng: np.random.Generator, sized: bool) -> str:
    """No positions: "a red circle and a blue square on a black background"."""
    body = join([noun_phrase(u, rng, sized) for u in units])
    return prefix(units, rng) + body + background(units, body, rng)


def _frame_count(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "three shapes: a red circle at the top, ..." (with or without positions)."""
    if len(units) < 2:
        return None
    count = NUMBERS[sum(len(u) for u in units)]
    head = f"{count} {pick(rng, ('shapes', 'objects'))}: "
    if rng.random() < 0.3:
        return head + join([noun_phrase(u, rng, sized) for u in units])
    return head + join(mentions(units, rng, sized))


def _frame_single(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "a single red circle in the centre"."""
    if len(units) != 1 or len(units[0]) != 1:
        return None
    obj = units[0][0]
    words = [pick(rng, SIZE_WORDS[obj.size])] if sized else []
    return " ".join(
        [
            pick(rng, ("a single", "one", "a lone", "only one")),
            *words,
            obj.colour,
            obj.shape,
            position(units[0], rng),
        ]
    )


_FRAMES: tuple[_Frame, ...] = (
    _frame_list,
    _frame_is,
    _frame_relation,
    _frame_with,
    _frame_position_first,
    _frame_terse,
    _frame_unplaced,
    _frame_count,
    _frame_single,
)
_FRAME_WEIGHTS = np.array([0.18, 0.12, 0.16, 0.11, 0.1, 0.12, 0.06, 0.07, 0.08])
_FRAME_WEIGHTS = _FRAME_WEIGHTS / _FRAME_WEIGHTS.sum()
