"""swabian instruments."""
