"""Errors a user can fix by changing params or inputs.

Stages print these as one line and exit non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with params, input files or the environment, explained in one line."""


class ParamsError(UserError):
    """params.yaml does not match the schema in ``inat_classifier.params``."""


class DataError(UserError):
    """Input data is missing, unreadable or inconsistent."""
