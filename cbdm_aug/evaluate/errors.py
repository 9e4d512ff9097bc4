"""The evaluate package's error: options or inputs that an evaluation (or the filter) cannot use."""
from cbdm_aug.errors import UserError


class EvaluateError(UserError):
    """Options or inputs that an evaluation cannot use."""
