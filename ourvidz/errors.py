"""Errors a user can act on. Each carries its exit code; the CLI prints one line and exits.

Anything else that escapes is a bug: the CLI still prints one line (and the traceback only
with OURVIDZ_DEBUG=1).
"""

EXIT_BUG = 1
EXIT_BAD_INPUT = 2  # unknown job type, malformed preset or job file, impossible size, empty prompt
EXIT_REFUSED = 3  # the prompt safety check refused the prompt
EXIT_WEIGHTS = 4  # weights missing, broken or not configured
EXIT_OUT_OF_MEMORY = 5  # the GPU ran out of memory
EXIT_GENERATION = 6  # a model failed while generating
EXIT_SERVICE = 7  # Redis (or another service) unreachable
EXIT_DISK_FULL = 8  # no space left on the device (or over quota) while writing
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM; finished outputs are kept


class OurvidzError(Exception):
    exit_code = EXIT_BUG
    retryable = True  # whether running the same job again could succeed (the queue worker asks)


class BadInput(OurvidzError):
    exit_code = EXIT_BAD_INPUT
    retryable = False


class PromptRefused(OurvidzError):
    exit_code = EXIT_REFUSED
    retryable = False


class WeightsError(OurvidzError):
    exit_code = EXIT_WEIGHTS
    retryable = False


class OutOfMemory(OurvidzError):
    exit_code = EXIT_OUT_OF_MEMORY


class GenerationFailed(OurvidzError):
    exit_code = EXIT_GENERATION


class ServiceError(OurvidzError):
    exit_code = EXIT_SERVICE


class DiskFull(OurvidzError):
    exit_code = EXIT_DISK_FULL  # retryable: another worker's disk, or this one once space is freed


class Interrupted(OurvidzError):
    exit_code = EXIT_INTERRUPTED


def reworded(exc: OurvidzError, message: str) -> OurvidzError:
    """The same kind of error (its exit code, whether retryable) with another message."""
    kind = next(c for c in type(exc).__mro__ if c.__module__ == __name__)
    return kind(message)


def one_line(exc: BaseException) -> str:
    """An unexpected exception as one short line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]
