"""The package version (`llava_hf.__version__`), in a module of its own so that submodules can read it without
importing the package root."""

__version__ = "0.1.0"
