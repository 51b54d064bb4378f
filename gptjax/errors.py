"""The one exception type that reaches the user as a single line."""


class UserError(Exception):
    """Bad input: the message says what was wrong, where, and what to do. Exit code 2."""
