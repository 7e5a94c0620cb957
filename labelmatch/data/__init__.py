"""Data layer: COCO-format detection datasets, the embedded datasets (digits, glyphs), view
transforms with their geometry, infinite samplers and the Lightning data module."""
