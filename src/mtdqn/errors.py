"""The one exception type for user mistakes.

Anything the user can fix (an unknown env id, a bad flag value, a run folder that exists, a corrupt or
mismatched checkpoint) raises :class:`UserError`. The CLI prints its message on one line and exits with
code 2; library callers can catch it.
"""


class UserError(Exception):
    """A mistake the user can fix; the message names the problem and the fix."""
