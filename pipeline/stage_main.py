"""How a stage ends when something is wrong: one line naming the file or key and what to do, an exit status.

    if __name__ == "__main__":
        sys.exit(stage_main(main, "train"))

Exit status: 0 done; 2 a usage or setup error (params, shards, checkpoints, tracking server, a missing
input), printed as ONE line ``<stage>: error: ...`` without a traceback; 130 interrupted (Ctrl-C, SIGTERM:
the MLflow run is marked KILLED, progress checkpoints are kept). Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

from pipeline.tracking_health import StageTerminated, TrackingUnavailable, raise_terminated
from semcolor.config import ConfigError
# from semcolor.errors, not the modules that raise them: a stage's code is what it imports (its dvc.yaml
# deps), and reporting an error must not make the download stage depend on the models
from semcolor.errors import (
    CheckpointError,
    DownloadError,
    ModelReferenceError,
    NonFiniteLossError,
    ShardIntegrityError,
    TooManySkippedError,
    UnsafeArchiveError,
)

# errors whose message already names the file, key or step at fault and says what to do
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, ShardIntegrityError, CheckpointError, ModelReferenceError, TrackingUnavailable, DownloadError,
    UnsafeArchiveError, TooManySkippedError, NonFiniteLossError, FileNotFoundError)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def stage_main(main: Callable[[], int], name: str) -> int:
    """Run a stage's ``main()`` and turn user errors and interrupts into one line and an exit status."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)  # SIGTERM unwinds like Ctrl-C: nothing half-done
    try:
        return int(main() or 0)
    except ConfigError as error:
        print(f"{name}: error: params.yaml: {one_line(error)}", file=sys.stderr)
    except USER_ERRORS as error:
        print(f"{name}: error: {one_line(error)}", file=sys.stderr)
    except KeyboardInterrupt as error:
        why = "terminated (SIGTERM)" if isinstance(error, StageTerminated) else "interrupted"
        print(f"{name}: {why}; progress checkpoints are kept: run the stage again to resume", file=sys.stderr)
        return 130
    return 2
