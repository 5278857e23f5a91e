"""PicoQuant instruments."""
