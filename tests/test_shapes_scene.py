"""Scenes of the ``shapes`` dataset: how many objects, where, and a varied mix."""

from __future__ import annotations

import collections

import numpy as np

from imcap.data.shapes.scene import COLOURS, SHAPES, SIZES, random_scene


def test_random_scene_layout_and_mix() -> None:
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng) for _ in range(2000)]
    counts = collections.Counter(len(s.objects) for s in scenes)
    assert set(counts) == {1, 2, 3}
    for k, share in [(1, 0.3), (2, 0.4), (3, 0.3)]:
        assert abs(counts[k] / len(scenes) - share) < 0.05
    objects = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objects} == set(SHAPES)
    assert {o.colour for o in objects} == set(COLOURS)
    assert {o.size for o in objects} == set(SIZES)
    assert all(len({(o.row, o.col) for o in s.objects}) == len(s.objects) for s in scenes)
    assert all(0 <= o.row <= 2 and 0 <= o.col <= 2 for o in objects)
    # No shape or colour dominates, so no constant caption fits most images.
    assert max(collections.Counter(o.colour for o in objects).values()) < 0.2 * len(objects)
    assert max(collections.Counter(o.shape for o in objects).values()) < 0.25 * len(objects)
