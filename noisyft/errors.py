"""The exception type for user mistakes: shown as one line, no traceback."""


class UserError(Exception):
    """Bad input from the user (a path, a CSV row, an option, a name).

    The CLI prints ``error: <message>`` and exits 2; the message must name the
    file, row or argument at fault and, where possible, what to do about it.
    """


def one_line(exc: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker re-raised it.

    PyTorch re-raises a worker's exception with a multi-line message that ends
    with ``module.Type: original message``; that last line's message is what the
    user needs.
    """
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(exc).__name__
