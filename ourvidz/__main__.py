import signal
import sys

# Until a command installs its own handling (batch: before its start-up work), SIGTERM exits 130
# like Ctrl-C rather than 143 by default: a signal at any moment gives the same exit code.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(130))

from ourvidz.cli import main  # noqa: E402

main()
