"""The embedded synthetic dataset ``shapes``: coloured shapes on a 3x3 grid, with captions.

Offline and deterministic, it lets the default pipeline run train a caption model on a CPU in
minutes. One image, in the order the code runs:

- ``scene``: draw 1-3 objects (shape, colour, size, cell);
- ``captions``: five distinct true captions, sentence frames filled with ``phrases``;
- ``render``: draw the scene as an RGB image;
- ``generate``: do that for every image of a seed and write the Karpathy-format dataset.
"""
