"""Desktop GUI (PySide6 + pyqtgraph), installed as qlab.gui."""
