"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""


class NasError(ValueError):
    """Bad input from a user: a genome, a space file, a flag, a measurements file.

    The message names the file or field and the reason, e.g.
    ``space mobile.yaml: dimensions.qkv_groups: 3 does not divide hidden_size 512``.
    """
