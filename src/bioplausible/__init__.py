"""bioplausible: biologically plausible learning rules with real differential privacy."""

__version__ = "0.1.0"
