"""Errors a user can cause and fix. The CLI prints them as one line, without a traceback."""


class ConfigError(ValueError):
    """A configuration value, key or command-line argument is invalid; the message names it."""


class CheckpointError(ValueError):
    """A checkpoint file does not fit the model or is malformed; the message names the file."""


class DataError(ValueError):
    """Bad input data; the message names the file (and record) and the problem."""


class JudgeError(RuntimeError):
    """The judge could not score every item (unreachable server, failed requests); finished items are cached."""


USER_ERRORS = (ConfigError, CheckpointError, DataError, JudgeError, FileNotFoundError, FileExistsError)
