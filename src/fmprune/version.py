"""The library's version, stamped into run directories and saved models. Its own module so the
stamping code need not import the package ``__init__`` (which imports everything)."""

__version__ = "0.1.0"
