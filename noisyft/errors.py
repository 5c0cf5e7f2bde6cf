"""The exception type for user mistakes: shown as one line, no traceback."""


class UserError(Exception):
    """Bad input from the user (a path, a CSV row, an option, a name).

    The CLI prints ``error: <message>`` and exits 2; the message must name the
    file, row or argument at fault and, where possible, what to do about it.
    """
