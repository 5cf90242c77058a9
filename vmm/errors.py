"""Errors the VMM reports to the user as one line (exit status 2)."""


class UserError(Exception):
    """Bad input from the user: a missing file, a bad image, a bad size string."""
