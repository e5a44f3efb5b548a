"""The one exception type for mistakes a user can make (bad input, unknown names, corrupt files).

The CLI turns it into one line on stderr and exit code 2; the server into a 4xx response.
"""


class UserError(Exception):
    """A mistake the user can fix; its message is one self-contained line."""


def utf8(text: str, what: str) -> bytes:
    """`text` as UTF-8; UserError if it cannot be (a command-line argument that was not UTF-8 arrives with
    lone surrogates in it, as Python decodes undecodable argv bytes), naming `what` but never the text."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(f"{what} is not valid UTF-8 text (at character {e.start})") from None
