"""Instrument drivers, one module per model, each with its device simulator beside it.

Installed as ``qlab.drivers``; the driver table is ``qlab.catalogue``.
"""
