"""The conversion: one plan per slide, the per-segment engine and its pool, apply."""
