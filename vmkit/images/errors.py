"""The one error class of the guest-image area (`vmkit images ...`)."""


class ImageError(Exception):
    """A guest image could not be found, fetched, verified or built.

    The message says what went wrong and what the user can do about it.
    """
