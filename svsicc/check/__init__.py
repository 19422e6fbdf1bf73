"""Evidence about a conversion: verify, the HTML report and the per-stage benchmark."""
