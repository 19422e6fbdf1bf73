"""The generic tiled TIFF driver (what OpenSlide's generic-tiff driver opens)."""
