"""qlab: run quantum-optics experiments on real lab hardware and on a faithful simulated lab."""

__version__ = "0.1.0"
