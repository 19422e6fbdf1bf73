"""The Ventana/Roche BIF driver (what OpenSlide's ventana driver opens)."""
