"""llmctl core: the torch-free plugin bus, config, errors and atomic I/O, plus (with torch) the model stack."""

__version__ = "0.1.0"
