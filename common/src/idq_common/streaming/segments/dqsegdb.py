"""Segments from a DQSegDB server through the ``dqsegdb2`` client, with retries.

``dqsegdb2.query_segments(flag, start, end, host=...)`` goes through
``igwn_auth_utils``, which looks for SciTokens / X.509 credentials. For a plain
``http://`` server (the local test server, or an in-cluster mirror without auth)
we pass ``force_noauth=True`` -- the documented ``igwn_auth_utils`` switch that
skips credential discovery -- so no token is needed and none is sent.

A span the server does not know yet (live mode: the server lags the detector) is
*unknown*, not inactive: :meth:`DQSegDBSegments.query_known` says which part is
known, the stream processor caches only that part and asks again for the rest on its
next poll, and the strides it could not decide are published as gaps. (Before, the
unknown part was returned as inactive, cached, and never asked again: livetime was
lost silently.) ``wait`` lets a live stage give the server a few seconds to catch up.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

from igwn_segments import segment, segmentlist
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from idq_common.exceptions import BadSpanError, SegmentQueryError
from idq_common.streaming.segments.base import clip

log = logging.getLogger(__name__)


class DQSegDBSegments:
    """Active segments of one flag from DQSegDB.

    Parameters
    ----------
    flag : str
        ``IFO:NAME:VERSION`` (or without version: the intersection over versions,
        dqsegdb2's rule).
    host : str
        Server URL, e.g. ``https://segments.igwn.org`` or ``http://127.0.0.1:8080``.
    retries : int
        Further attempts after the first one fails with a retryable error
        (connection refused/reset, timeout, HTTP 5xx, an answer that is not the
        expected JSON).
    backoff : float
        Seconds before the first retry; doubled for each further retry.
    timeout : float
        Per-request timeout, seconds.
    auth : bool or None
        None: no credentials for ``http://`` hosts, discovery for ``https://``.
    sleep : callable
        How to wait between retries (injected by tests so they never sleep).
    wait : float
        Seconds :meth:`query_known` keeps asking (every ``poll`` s) while part of the
        span is not known to the server yet.
    poll : float
        Seconds between those questions.
    """

    def __init__(
        self,
        flag: str,
        host: str,
        retries: int = 3,
        backoff: float = 1.0,
        timeout: float = 30.0,
        auth: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
        wait: float = 0.0,
        poll: float = 1.0,
    ) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0")
        self.flag = flag
        self.host = host.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.auth = (not self.host.startswith("http://")) if auth is None else auth
        self._sleep = sleep
        self.wait = float(wait)
        self.poll = float(poll)
        self.attempts = 0  # total requests made, for metrics and tests

    def __repr__(self) -> str:
        return f"DQSegDBSegments({self.flag!r}, host={self.host!r})"

    def _query_once(self, start: float, end: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"timeout": self.timeout}
        if not self.auth:
            kwargs["force_noauth"] = True
        self.attempts += 1
        with warnings.catch_warnings():
            if not self.auth:
                # dqsegdb2's Session still probes for X.509 files (and warns that LIGO.ORG
                # X.509 is retired) even though this request sends no credentials
                warnings.filterwarnings(
                    "ignore", category=DeprecationWarning, module="igwn_auth_utils"
                )
            out = _dqsegdb2().query_segments(self.flag, start, end, host=self.host, **kwargs)
        if not isinstance(out, dict) or "active" not in out or "known" not in out:
            raise ValueError(f"answer lacks 'known'/'active': {str(out)[:200]}")
        return out

    def query(self, start: float, end: float) -> segmentlist:
        """Active segments of the flag in ``[start, end)``.

        Raises
        ------
        BadSpanError
            Part of the span is not known to the server (even after ``wait``).
        SegmentQueryError
            See :meth:`query_known`.
        """
        known, active = self.query_known(start, end)
        unknown = clip([(start, end)], start, end) - known
        if abs(unknown):
            raise BadSpanError(f"DQSegDB {self.host}: {self.flag} not known over {unknown}")
        return active

    def query_known(self, start: float, end: float) -> tuple[segmentlist, segmentlist]:
        """``(known, active)`` in ``[start, end)``; active is inside known.

        While part of the span is unknown, asks again every ``poll`` seconds for up to
        ``wait`` seconds (a live server catching up), then answers with what it knows.

        Raises
        ------
        SegmentQueryError
            After ``retries`` retries with exponential backoff, or at once for a
            non-retryable answer (HTTP 4xx: unknown flag, forbidden).
        """
        deadline = time.monotonic() + self.wait
        while True:
            known, active = self._query_retrying(start, end)
            if segment(start, end) in known or end <= start or time.monotonic() >= deadline:
                break
            self._sleep(min(self.poll, max(0.0, deadline - time.monotonic())))
        unknown = clip([(start, end)], start, end) - known
        if abs(unknown):
            log.warning("DQSegDB %s: %s not known (yet) over %s", self.host, self.flag, unknown)
        return known, active

    def _query_retrying(self, start: float, end: float) -> tuple[segmentlist, segmentlist]:
        if end <= start:
            return segmentlist(), segmentlist()

        def log_retry(state: RetryCallState) -> None:
            assert state.outcome is not None and state.next_action is not None
            log.warning(
                "DQSegDB query %s [%s, %s) failed (attempt %d/%d: %s); retrying in %.2f s",
                self.flag,
                start,
                end,
                state.attempt_number,
                self.retries + 1,
                _short(state.outcome.exception()),
                state.next_action.sleep,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            # backoff, 2 x backoff, 4 x backoff ...
            wait=wait_exponential(multiplier=self.backoff, exp_base=2, min=0),
            # connection refused/reset, timeouts, HTTP 5xx, garbage bodies; a 4xx is
            # turned into SegmentQueryError by _attempt and not retried
            retry=retry_if_exception_type(_retryable()),
            sleep=self._sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            out = retrying(self._attempt, start, end)
        except _retryable() as exc:
            raise SegmentQueryError(
                f"DQSegDB {self.host}: query for {self.flag} [{start}, {end}) failed after "
                f"{self.retries + 1} attempts; last error: {_short(exc)}"
            ) from exc
        known = clip(out["known"], start, end)
        return known, clip(out["active"], start, end) & known

    def _attempt(self, start: float, end: float) -> dict[str, Any]:
        try:
            return self._query_once(start, end)
        except _requests().HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status is not None and 400 <= status < 500:
                raise SegmentQueryError(
                    f"DQSegDB {self.host} refused {self.flag} [{start}, {end}): HTTP {status}"
                ) from exc
            raise


def _dqsegdb2() -> Any:
    # imported on first query: dqsegdb2 (igwn-auth-utils, requests) costs ~0.3 CPU s
    # that every stage process paid at start, whatever its segments source
    import dqsegdb2

    return dqsegdb2


def _requests() -> Any:
    import requests

    return requests


def _retryable() -> tuple[type[BaseException], ...]:
    """What a retry may cure."""
    return (_requests().RequestException, json.JSONDecodeError, ValueError, KeyError, TypeError)


def _short(exc: BaseException | None) -> str:
    text = f"{type(exc).__name__}: {exc}" if exc is not None else "none"
    return text if len(text) <= 300 else text[:300] + "..."
