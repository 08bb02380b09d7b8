"""Verify a suspect that is only reachable through a prediction API (paper Sections 3.1-3.2: the verifier
queries the suspect's deployed service with the fingerprint points and compares the labels it returns).

Two wire protocols are spoken, both JSON over HTTP:

* ``tfserving``: TensorFlow Serving's REST predict API, ``POST /v1/models/NAME[/versions/V]:predict`` with
  ``{"instances": [...]}``, answered by ``{"predictions": [...]}`` (KServe's v1 protocol is the same);
* ``v2``: the Open Inference Protocol (KServe, Triton, MLServer), ``POST /v2/models/NAME[/versions/V]/infer``
  with one FP32 input tensor, answered by ``{"outputs": [{"shape": ..., "data": [...]}, ...]}`` (the first
  output is used).

The suspect may answer with class labels (one integer per point, or ``[label]``) or with one row of C scores
per point (probabilities or logits; the label is the arg-max). ``output="auto"`` accepts either, point by
point, and checks it: every reply must be JSON of the expected shape, labels must lie in ``[0, C)`` and scores
must be C finite numbers, or :class:`RemoteError` says what was wrong. A wrong reply never becomes a wrong
matching rate.

Points are sent as the model expects them: the fingerprint's ``[0, 1]`` points are reshaped to its
``input_shape`` and multiplied by its ``input_scale`` (both from the fingerprint's metadata; the scale can be
overridden). Queries go out in batches, with a per-request timeout, retries with exponential backoff (and
jitter) on timeouts, dropped connections, HTTP 429 and 5xx, an optional rate limit and an optional query
budget. The labels received are saved after every batch to a progress file (atomically), so an interrupted
verification (Ctrl-C, a crash, an exhausted budget, a persistent server error) resumes without re-querying
the points already answered; the file is removed once the verification is complete.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ipguard_tf.core.errors import IPGuardError

log = logging.getLogger(__name__)


PROTOCOLS = ("tfserving", "v2")


OUTPUTS = ("auto", "labels", "probabilities")


#: defaults of the remote client (the paper is silent; chosen for public prediction services)
DEFAULT_REMOTE_BATCH = 32


DEFAULT_TIMEOUT = 30.0


DEFAULT_RETRIES = 5


DEFAULT_BACKOFF = 0.5


MAX_BACKOFF = 30.0


_V1 = re.compile(r"^(?P<base>.*)/v1/models/(?P<name>[^/:]+)(?P<ver>/versions/[^/:]+)?(?P<verb>:predict)?/?$")


_V2 = re.compile(r"^(?P<base>.*)/v2/models/(?P<name>[^/]+)(?P<ver>/versions/[^/]+)?(?P<verb>/infer)?/?$")


class RemoteError(IPGuardError):
    """The suspect's prediction API could not be used or gave an unusable answer (one-line message)."""


def resolve_endpoint(url: str, protocol: Optional[str] = None) -> Tuple[str, str, str]:
    """Return (endpoint URL, protocol, model name) for a suspect URL.

    ``url`` is the model's URL (``http://host:8501/v1/models/NAME`` or ``.../v2/models/NAME``, optionally with
    ``/versions/V`` and the ``:predict`` / ``/infer`` verb). The protocol follows from the path unless given;
    a path that contradicts ``protocol`` is an error.
    """
    if protocol is not None and protocol not in PROTOCOLS:
        raise RemoteError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    try:
        parts = urlsplit(str(url).strip())
        parts.port  # noqa: B018 (validates the port)
    except ValueError as exc:
        raise RemoteError(f"suspect URL {url!r} is malformed ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RemoteError(f"suspect URL must start with http:// or https:// and name a host, got {url!r}")
    path = parts.path
    m1, m2 = _V1.match(path), _V2.match(path)
    found = "tfserving" if m1 else ("v2" if m2 else None)
    if found is None:
        raise RemoteError(
            f"cannot find the model in {url!r}: expected a path like /v1/models/NAME "
            "(TensorFlow Serving) or /v2/models/NAME (Open Inference Protocol)"
        )
    if protocol is not None and protocol != found:
        raise RemoteError(f"--protocol {protocol} does not match the URL path {path!r} ({found} API)")
    m = m1 or m2
    verb = ":predict" if found == "tfserving" else "/infer"
    version = "v1" if found == "tfserving" else "v2"
    new_path = f"{m.group('base')}/{version}/models/{m.group('name')}{m.group('ver') or ''}{verb}"
    return urlunsplit((parts.scheme, parts.netloc, new_path, parts.query, "")), found, m.group("name")


def _is_int_like(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and np.isfinite(v) and float(v).is_integer()


@dataclass
class RemoteSuspect:
    """A suspect model behind a prediction API, queried in batches (see the module docstring).

    Args:
        url: the model's URL (see :func:`resolve_endpoint`).
        num_classes: C, from the fingerprint; replies are checked against it (``None``: labels only >= 0).
        input_shape: per-point input shape the service expects (the fingerprint's).
        input_scale: factor applied to the [0, 1] points before sending (e.g. 255).
        protocol: ``tfserving`` or ``v2`` (``None``: from the URL).
        output: ``labels``, ``probabilities`` (any C scores) or ``auto`` (either, checked per point).
        batch_size: points per request.
        timeout: seconds before a request is abandoned (and retried).
        retries: further attempts after a failed one (timeouts, dropped connections, 429, 5xx).
        backoff: first retry delay in seconds; doubled per attempt, capped at 30 s, with jitter; a
            ``Retry-After`` header is honoured up to the cap.
        max_rps: at most this many requests per second (``None``: no limit).
        query_budget: at most this many points sent in all (every attempt counts, as a paid API would
            count it); exceeding it raises :class:`RemoteError` after the answered points are saved.
    """

    url: str
    num_classes: Optional[int]
    input_shape: Tuple[int, ...]
    input_scale: float = 1.0
    protocol: Optional[str] = None
    output: str = "auto"
    batch_size: int = DEFAULT_REMOTE_BATCH
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    max_rps: Optional[float] = None
    query_budget: Optional[int] = None
    input_name: str = "input-0"
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self.endpoint, self.protocol, self.model_name = resolve_endpoint(self.url, self.protocol)
        if self.output not in OUTPUTS:
            raise RemoteError(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        for name, lo in (("batch_size", 1), ("retries", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise RemoteError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name in ("timeout", "input_scale"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
                raise RemoteError(f"{name} must be a positive number, got {v!r}")
        if not np.isfinite(self.backoff) or self.backoff < 0:
            raise RemoteError(f"backoff must be >= 0, got {self.backoff!r}")
        if self.max_rps is not None and (not np.isfinite(self.max_rps) or self.max_rps <= 0):
            raise RemoteError(f"max_rps must be a positive number, got {self.max_rps!r}")
        if self.query_budget is not None and (isinstance(self.query_budget, bool) or self.query_budget < 0):
            raise RemoteError(f"query_budget must be >= 0, got {self.query_budget!r}")
        if self.num_classes is not None and self.num_classes < 2:
            raise RemoteError(f"num_classes must be >= 2, got {self.num_classes!r}")
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.points_sent = 0
        self.requests_sent = 0
        self.retried = 0
        self._last_request = -np.inf
        self._session = None

    # -- wire format -----------------------------------------------------------------------------------------
    def _body(self, x: np.ndarray) -> Dict[str, Any]:
        x = np.asarray(x, np.float32).reshape((len(x),) + self.input_shape) * np.float32(self.input_scale)
        if self.protocol == "tfserving":
            return {"instances": x.tolist()}
        return {
            "inputs": [
                {"name": self.input_name, "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}
            ]
        }

    def _rows(self, reply: Any, n: int) -> List[Any]:
        """The per-point answers of a decoded reply, as a list of n entries (label or score row)."""
        if not isinstance(reply, dict):
            raise RemoteError(f"{self.endpoint} replied with JSON {type(reply).__name__}, expected an object")
        if self.protocol == "tfserving":
            if "predictions" not in reply:
                extra = f": {str(reply.get('error'))[:200]}" if "error" in reply else ""
                raise RemoteError(f"{self.endpoint} replied without 'predictions'{extra}")
            rows = reply["predictions"]
            if isinstance(rows, dict) and len(rows) == 1:  # columnar format with one output
                rows = next(iter(rows.values()))
            if not isinstance(rows, list):
                raise RemoteError(f"{self.endpoint}: 'predictions' is a {type(rows).__name__}, expected a list")
            rows = [next(iter(r.values())) if isinstance(r, dict) and len(r) == 1 else r for r in rows]
        else:
            outs = reply.get("outputs")
            if not isinstance(outs, list) or not outs or not isinstance(outs[0], dict):
                extra = f": {str(reply.get('error'))[:200]}" if "error" in reply else ""
                raise RemoteError(f"{self.endpoint} replied without a list of 'outputs'{extra}")
            out = outs[0]
            shape, data = out.get("shape"), out.get("data")
            if (
                not isinstance(shape, list)
                or not all(_is_int_like(d) and d >= 0 for d in shape)
                or not isinstance(data, list)
            ):
                raise RemoteError(f"{self.endpoint}: output {out.get('name')!r} lacks a valid 'shape' and 'data'")
            shape = [int(d) for d in shape]
            if int(np.prod(shape)) != len(data) or not shape or shape[0] != n:
                raise RemoteError(
                    f"{self.endpoint}: output shape {shape} does not fit {len(data)} values for {n} points"
                )
            per = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            if len(shape) > 2:
                raise RemoteError(f"{self.endpoint}: output shape {shape} is neither [n] (labels) nor [n, C]")
            rows = data if len(shape) == 1 else [data[i * per : (i + 1) * per] for i in range(n)]
        if len(rows) != n:
            raise RemoteError(f"{self.endpoint} answered {len(rows)} predictions for {n} points")
        return rows

    def _score_row(self, row: List[Any]) -> np.ndarray:
        """A checked row of C class scores."""
        c = self.num_classes
        if not row or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
            raise RemoteError(f"{self.endpoint} answered a score row that is not a list of numbers")
        a = np.asarray(row, np.float64)
        if c is not None and len(a) != c:
            raise RemoteError(
                f"{self.endpoint} answered {len(a)} class scores per point; the fingerprinted model has {c} classes"
            )
        if not np.all(np.isfinite(a)):
            raise RemoteError(f"{self.endpoint} answered NaN or infinite class scores")
        return a

    def _label(self, row: Any) -> int:
        c = self.num_classes
        if isinstance(row, list) and len(row) == 1 and self.output != "probabilities":
            row = row[0]  # [label]
        if isinstance(row, list):
            if self.output == "labels":
                raise RemoteError(
                    f"{self.endpoint} answered a row of {len(row)} values where a label was expected "
                    "(use --output probabilities)"
                )
            return int(np.argmax(self._score_row(row)))
        if self.output == "probabilities":
            raise RemoteError(
                f"{self.endpoint} answered {type(row).__name__} {str(row)[:40]} where a row of "
                "class scores was expected (use --output labels)"
            )
        if not _is_int_like(row):
            raise RemoteError(f"{self.endpoint} answered {str(row)[:40]!r} where a class label was expected")
        lab = int(row)
        if lab < 0 or (c is not None and lab >= c):
            raise RemoteError(f"{self.endpoint} answered label {lab}, outside the classes 0..{(c or 0) - 1}")
        return lab

    # -- transport ---------------------------------------------------------------------------------------------
    def _post(self, body: bytes, n: int) -> Any:
        import requests

        if self._session is None:
            self._session = requests.Session()
        attempt = 0
        while True:
            if self.query_budget is not None and self.points_sent + n > self.query_budget:
                raise RemoteError(
                    f"query budget of {self.query_budget} points exhausted "
                    f"({self.points_sent} sent); re-run with a larger --query-budget to continue"
                )
            if self.max_rps:
                wait = self._last_request + 1.0 / self.max_rps - time.monotonic()
                if wait > 0:
                    self.sleep(wait)
            self._last_request = time.monotonic()
            self.points_sent += n
            self.requests_sent += 1
            retry_after = None
            try:
                r = self._session.post(
                    self.endpoint,
                    data=body,
                    timeout=self.timeout,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                )
                status, text = r.status_code, r.text
                if status == 429 or status >= 500:
                    problem = f"HTTP {status}"
                    ra = r.headers.get("Retry-After", "")
                    retry_after = float(ra) if re.fullmatch(r"\d+(\.\d+)?", ra.strip()) else None
                elif status >= 400:
                    raise RemoteError(
                        f"{self.endpoint} refused the request: HTTP {status}: {' '.join(text.split())[:200]}"
                    )
                else:
                    try:
                        return json.loads(text)
                    except ValueError:
                        raise RemoteError(
                            f"{self.endpoint} replied with a body that is not JSON: {' '.join(text.split())[:80]!r}"
                        ) from None
            except requests.exceptions.Timeout:
                problem = f"no reply within {self.timeout:g} s"
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                problem = f"connection failed ({type(exc).__name__})"
            except requests.exceptions.RequestException as exc:
                raise RemoteError(f"cannot query {self.endpoint}: {type(exc).__name__}: {str(exc)[:200]}") from None
            if attempt >= self.retries:
                raise RemoteError(f"{self.endpoint}: {problem}, gave up after {attempt + 1} attempts")
            delay = min(MAX_BACKOFF, self.backoff * 2**attempt) * (0.5 + 0.5 * random.random())
            if retry_after is not None:
                delay = min(MAX_BACKOFF, max(delay, retry_after))
            log.warning("%s: %s; retry %d of %d in %.2f s", self.endpoint, problem, attempt + 1, self.retries, delay)
            self.retried += 1
            attempt += 1
            self.sleep(delay)

    # -- the predict interface of a local classifier (ipguard_tf.models.classifier.Classifier), so that callers
    # (the stealing oracle) need not know where a model runs
    #: what the service's rows of scores are, judged per reply (:func:`~ipguard_tf.core.statistics.
    #: looks_like_probabilities`): the service does not say
    scores_kind = "auto"

    #: a service can always be asked for scores; whether it gives them is checked per reply (:meth:`query_scores`
    #: refuses a service that answers labels with a one-line RemoteError)
    has_scores = True

    def predict_labels(self, x: np.ndarray, batch_size: Optional[int] = None) -> np.ndarray:
        """Labels of ``x``, one request per ``batch_size`` points (default: the suspect's batch size)."""
        b = batch_size or self.batch_size
        return (
            np.concatenate([self.query(x[s : s + b]) for s in range(0, len(x), b)])
            if len(x)
            else np.zeros((0,), np.int64)
        )

    def predict_scores(self, x: np.ndarray, batch_size: Optional[int] = None) -> np.ndarray:
        """Class scores of ``x`` as the service gives them, one request per ``batch_size`` points."""
        b = batch_size or self.batch_size
        return np.concatenate([self.query_scores(x[s : s + b]) for s in range(0, len(x), b)])

    def query(self, x: np.ndarray) -> np.ndarray:
        """Labels the service gives to one batch of [0, 1] points (one request, retried as configured)."""
        return np.asarray([self._label(r) for r in self._ask(x)], np.int64)

    def query_scores(self, x: np.ndarray) -> np.ndarray:
        """The C class scores (probabilities or logits, as the service gives them) for one batch of [0, 1]
        points; a service that answers labels only is refused with a RemoteError that says so."""
        rows = self._ask(x)
        bad = next((r for r in rows if not isinstance(r, list) or len(r) == 1), None)  # [label] is a label
        if bad is not None:
            raise RemoteError(
                f"{self.endpoint} answers class labels only ({str(bad)[:40]}); this needs a row of "
                "class scores per point (a probability API)"
            )
        return np.stack([self._score_row(r) for r in rows]).astype(np.float32)

    def _ask(self, x: np.ndarray) -> List[Any]:
        x = np.asarray(x)
        if x.ndim == 0 or len(x) == 0:
            raise RemoteError("no points to query")
        if not np.all(np.isfinite(x)):
            raise RemoteError("points to query contain NaN or infinite values")
        if int(np.prod(x.shape[1:])) != int(np.prod(self.input_shape)):
            raise RemoteError(f"points have shape {tuple(x.shape[1:])}, the service expects {self.input_shape}")
        body = json.dumps(self._body(x)).encode("utf-8")
        return self._rows(self._post(body, len(x)), len(x))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
