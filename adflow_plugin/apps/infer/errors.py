"""The one error type of ``basicsr infer``: the command prints its message as one line."""


class InferError(Exception):
    """A problem with the user's input (model, images, output folder), explained in one line."""
