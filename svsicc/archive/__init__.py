"""Whole archives: discovery, the journal, resumable parallel migration."""
