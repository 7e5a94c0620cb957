"""The one exception type for bad input data."""


class DataError(ValueError):
    """Bad input data. The message names the file, the record (image id, annotation id or
    file name) and what is wrong with it."""


class UnknownCategoryError(DataError, KeyError):
    """A category id (or model label) that the category list does not contain.

    A KeyError too, so that mapping-style callers can catch it as a failed lookup.
    """

    def __str__(self) -> str:
        # KeyError.__str__ would print the message as a quoted repr.
        return str(self.args[0]) if self.args else ""
