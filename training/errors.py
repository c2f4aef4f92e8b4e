"""The error a user can fix: bad data, bad arguments, an unwritable artifacts directory."""


class TrainingError(Exception):
    """Raised for bad input; the CLI prints the message on one line and exits 2."""
