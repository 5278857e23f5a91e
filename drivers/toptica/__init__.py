"""Toptica instruments."""
