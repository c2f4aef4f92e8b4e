"""``python -m keras_serve``: the ``keras-serve`` command (named so in its help and errors)."""

from keras_serve.cli import main

if __name__ == "__main__":
    main(prog_name="keras-serve")
