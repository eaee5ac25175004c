"""The one exception type users of the assistant catch.

Every problem with a user's input (media, messages, options, artifacts) is raised as
``AssistantError`` with a message that names the problem and the input. Internal bugs stay
ordinary exceptions so they are not mistaken for bad input.
"""


class AssistantError(ValueError):
    """A request could not be served because of its input; the assistant is unchanged."""


class MediaError(AssistantError):
    """A media item could not be read: missing, too big, corrupt, disguised or a decompression bomb."""
