"""Low-level TIFF: every read of the input, every offset patched, the output file's life."""
