"""Image-level building blocks that hold for any smear field, not only BCCD's.

- :mod:`bloodlib.imaging.scale` -- the field's cell scale: typical red-cell diameter in pixels
- :mod:`bloodlib.imaging.tiling` -- overlapping tiles over a large field and merging their detections
- :mod:`bloodlib.imaging.stain` -- stain normalisation (Reinhard, Macenko) and colour statistics

Each module needs only numpy, OpenCV and torch/torchvision; none imports the rest of bloodlib.
"""
