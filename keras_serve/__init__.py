"""The ``keras-serve`` command: the project's tools behind one entry point (see ``cli``)."""

from keras_serve.cli import main

__all__ = ["main"]
