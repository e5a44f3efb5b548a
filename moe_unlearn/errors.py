"""The one exception type for mistakes a user can make (bad input, unknown names, corrupt files).

The CLI turns it into one line on stderr and exit code 2; the server into a 4xx response.
"""


class UserError(Exception):
    """A mistake the user can fix; its message is one self-contained line."""
