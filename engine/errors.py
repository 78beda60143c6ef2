"""The engine's exceptions. Each carries one line a person can act on.

The CLI maps :class:`GridflowError` subclasses to exit code 1 and prints ``str(error)``.
"""


class GridflowError(Exception):
    """Base class: a user-facing error; the command changed nothing."""


class NotFound(GridflowError):
    """An id, key or name does not exist."""


class InvalidInput(GridflowError):
    """Data, a file or an argument is malformed or fails validation."""


class DefinitionError(InvalidInput):
    """A BPMN file was rejected at lint/deploy; ``issues`` lists every problem found."""

    def __init__(self, message: str, issues=()):
        super().__init__(message)
        self.issues = list(issues)


class NotAllowed(GridflowError):
    """The acting user may not do this, or the task is not in a state that allows it."""


class Conflict(GridflowError):
    """Another command changed the same instance or task first."""


class InstanceFailed(GridflowError):
    """A step failed (handler error, expression error); the instance is marked ``error``."""


class ExpressionError(ValueError):
    """An expression is not allowed, does not parse, or failed to evaluate (see :mod:`engine.expressions`).

    A ``ValueError``, not a :class:`GridflowError`: the command that evaluated it says what failed where.
    Defined here so that modules which only catch it (``engine.api``) need not import simpleeval.
    """
