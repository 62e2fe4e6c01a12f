"""Is the MLflow tracking server there? One short request, before anything waits on it.

MLflow's HTTP client retries a dead server with back-off for about four minutes and then raises a long
traceback; ``check_reachable`` asks ``<uri>/health`` once, with a timeout of a few seconds, and says in one line
which server is down and what to do. Only HTTP(S) URIs are checked: a local SQLite store needs no server.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit

DEFAULT_TIMEOUT_S = 5.0
_reachable: set[str] = set()


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached; the message names it and says what to do."""


def check_reachable(uri: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Raise TrackingUnavailable unless the tracking server at ``uri`` (default: MLflow's current tracking
    URI) answers. Any HTTP answer below 500 counts (401/403: the server is there, credentials are MLflow's
    business); a refused, reset or timed-out connection, or a 5xx (a proxy before a dead server), does not.
    A server found once is not asked again in this process."""
    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    uri = str(uri)
    if urlsplit(uri).scheme not in ("http", "https") or uri in _reachable:
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(urllib.request.Request(health, method="GET"), timeout=timeout):
            pass
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise _unavailable(uri, f"HTTP {error.code} from {health}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise _unavailable(uri, " ".join(str(reason).split()) or type(error).__name__) from None
    _reachable.add(uri)


def _unavailable(uri: str, reason: str) -> TrackingUnavailable:
    return TrackingUnavailable(
        f"the MLflow tracking server {uri} is not reachable ({reason}); start it (mlflow server ...), or point "
        "MLFLOW_TRACKING_URI at a running one (unset: sqlite:///mlflow.db in the working directory)")
