"""The Aperio SVS driver: page roles and layout, the ImageDescription mark, slide info."""
