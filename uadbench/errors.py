"""User-facing errors. The CLI prints them as one line and exits with status 2."""


class UadbenchError(Exception):
    """An error caused by the user's input: what was wrong, what is valid, what to do."""


class ConfigError(UadbenchError):
    """A configuration, preset, override or grid file is invalid."""


class DataError(UadbenchError):
    """A data file or dataset is missing or malformed."""
