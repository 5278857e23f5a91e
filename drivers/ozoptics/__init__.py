"""OZ Optics instruments."""
