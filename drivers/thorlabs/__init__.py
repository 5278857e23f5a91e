"""thorlabs instruments."""
