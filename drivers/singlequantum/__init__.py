"""Single Quantum instruments."""
