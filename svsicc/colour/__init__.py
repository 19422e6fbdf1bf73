"""ICC profiles, the exact 8-bit colour table and colour-difference measures."""
