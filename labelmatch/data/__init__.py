"""Data layer: COCO-format detection datasets, the embedded digits dataset, view transforms
with their geometry, infinite samplers and the Lightning data module."""
