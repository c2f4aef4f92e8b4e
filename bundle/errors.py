"""The one exception the bundle format raises."""


class BundleError(Exception):
    """A bundle is missing, incomplete, altered or inconsistent; the message says which."""
