"""The one exception type for mistakes a user can make (bad config, missing data, impossible budget).

The CLI prints its message without a stack trace; everything else is a bug and keeps its trace.
"""


class GraphpruneError(Exception):
    """A user-facing error whose message says what is wrong and what to do."""
