"""The project's one user-facing error type.

It lives in `runtimes` (the lowest layer, shippable alone) so every layer can raise it. The
CLI prints its message as one line and exits 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, with a message that says what to do."""
