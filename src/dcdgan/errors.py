"""The one exception type the CLI turns into a one-line message (no traceback)."""


class UserError(ValueError):
    """Bad input from the user: a file, a config key, a value. The message names the culprit and the fix."""

    exit_code = 2  # the CLI's exit status for it
