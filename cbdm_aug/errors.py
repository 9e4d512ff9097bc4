"""Exceptions for bad user input. The CLI prints these as one line, without a traceback."""


class UserError(ValueError):
    """Bad input from the user: the message names the file or value and says what is accepted."""


class ConfigError(UserError):
    """Options or settings that are invalid or contradict each other."""
