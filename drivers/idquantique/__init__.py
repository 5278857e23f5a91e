"""ID Quantique instruments."""
