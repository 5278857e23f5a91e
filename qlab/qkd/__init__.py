"""Quantum key distribution post-processing: BBM92 (and BB84) from timestamp streams."""
