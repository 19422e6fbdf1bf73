"""The version of svsicc: one place, read by the package, the mark it writes and the journal."""

__version__ = "0.1.0"
