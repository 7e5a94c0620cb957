"""What every command-line entry point shares (`run`, `predict`, `evaluate`, `export`): the
console set-up and the errors that end a command with one log line and an exit code instead of
a traceback. Kept apart from `labelmatch.run` so that the other commands do not import training.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf.errors import MissingMandatoryValue

from labelmatch.console import quiet_dependencies
from labelmatch.data.errors import DataError
from labelmatch.errors import ConfigError
from labelmatch.method.errors import NonFiniteLossError
from labelmatch.scaling import ScalingError

__all__ = ["ConfigError", "USER_ERRORS", "cli_errors", "one_line"]

# Bad input (or a diverged run) is the user's to fix: one clear line, no traceback.
USER_ERRORS = (DataError, ConfigError, FileNotFoundError, NonFiniteLossError, ScalingError)


@contextmanager
def cli_errors(log: logging.Logger, *also: type[Exception]) -> Iterator[None]:
    """Run an entry point's body with the console filters installed; the user's errors (and
    `also`, the command's own) become one `log.error` line and exit status 1, SIGTERM / Ctrl-C
    (after SaveOnInterrupt has saved last.ckpt) exit status 128 + SIGTERM."""
    quiet_dependencies()
    try:
        yield
    except (*USER_ERRORS, *also) as error:
        log.error("%s", one_line(error))
        sys.exit(1)
    # Raised while Hydra built an object (a model, a callback): Hydra wraps the error, which is
    # the user's to fix when it is one of the above.
    except InstantiationException as error:
        if not isinstance(error.__cause__, (*USER_ERRORS, *also)):
            raise
        log.error("%s", one_line(error.__cause__))
        sys.exit(1)
    except SIGTERMException:
        sys.exit(128 + signal.SIGTERM)
    # A ??? key, e.g. data.splits.root of the paper experiments.
    except MissingMandatoryValue as error:
        log.error(
            "%s is not set: give it on the command line (%s=...)", error.full_key, error.full_key
        )
        sys.exit(1)


def one_line(error: BaseException) -> str:
    """The error's own message. A DataError raised in a DataLoader worker is re-raised in the
    main process with the worker's traceback in its message; its last line is the message."""
    message = str(error).strip()
    if "Original Traceback" in message:
        message = message.splitlines()[-1].split(": ", 1)[-1]
    return message
