"""``python -m keras_serve``: the ``keras-serve`` command."""

from keras_serve.cli import main

if __name__ == "__main__":
    main()
