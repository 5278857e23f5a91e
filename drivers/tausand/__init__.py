"""Tausand Electronics instruments."""
