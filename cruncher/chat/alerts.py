"""Which failures reach the chat, and when: one alert per failing sequence, the rest in a digest.

An alert nobody can act on is worse than none (alert fatigue): a sequence that fails fifty times
is one alert, not fifty; failures that will be retried are not alerts at all; and however bad the
night, no more than ``max_per_hour`` alerts are posted. Everything held back is counted and
folded into a periodic digest, so nothing is hidden either. Pure logic with an injected clock:
the chatbot feeds it failures and asks it, now and then, whether a digest is due.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cruncher.messages import Failure

HOUR_S = 3600.0


@dataclass
class _Folded:
    count: int = 0
    last_reason: str = ""
    retryable: int = 0


@dataclass
class AlertDesk:
    """Decides, failure by failure, what to post.

    Parameters
    ----------
    max_per_hour
        Most alerts posted in any sliding hour (digests are not counted).
    digest_every_s
        Least time between two digests.
    quiet_s
        A sequence alerted about is not alerted again for this long; its repeats are folded.
    """

    max_per_hour: int = 10
    digest_every_s: float = 900.0
    quiet_s: float = 6 * HOUR_S
    clock: Callable[[], float] = time.monotonic
    _sent: deque = field(default_factory=deque, init=False)          # times of recent alerts
    _alerted: dict[str, float] = field(default_factory=dict, init=False)
    _folded: dict[str, _Folded] = field(default_factory=dict, init=False)
    _last_digest: float | None = field(default=None, init=False)

    def offer(self, failure: Failure) -> str | None:
        """The alert to post for ``failure`` now, or None when it is folded into the digest."""
        now = self.clock()
        key = failure_key(failure)
        while self._sent and now - self._sent[0] >= HOUR_S:
            self._sent.popleft()
        recently = now - self._alerted.get(key, -1e18) < self.quiet_s
        if failure.retryable or recently or len(self._sent) >= self.max_per_hour:
            folded = self._folded.setdefault(key, _Folded())
            folded.count += 1
            folded.retryable += failure.retryable
            folded.last_reason = failure.reason
            return None
        self._alerted[key] = now
        self._sent.append(now)
        if self._last_digest is None:
            self._last_digest = now          # the first digest comes an interval after an alert
        return alert_text(failure)

    def digest(self) -> str | None:
        """The digest of what was folded since the last one, if one is due."""
        now = self.clock()
        if not self._folded:
            return None
        if self._last_digest is not None and now - self._last_digest < self.digest_every_s:
            return None
        self._last_digest = now
        folded, self._folded = self._folded, {}
        return digest_text(folded)


def failure_key(failure: Failure) -> str:
    """What makes two failures "the same": the sequence (dataset) they belong to, else the
    stage and the first file."""
    if failure.sequence:
        return failure.sequence
    return f"{failure.stage}:{failure.files[0] if failure.files else failure.job_id}"


def alert_text(failure: Failure) -> str:
    where = failure.sequence or (failure.files[0] if failure.files else failure.job_id)
    return (f":warning: {failure.stage} failed for {short(where)}: {failure.reason[:300]}\n"
            f"(repeats of this failure are folded into a digest)")


def digest_text(folded: dict[str, _Folded]) -> str:
    total = sum(f.count for f in folded.values())
    lines = [f":memo: digest: {total} more failure(s) held back"]
    ranked = sorted(folded.items(), key=lambda kv: -kv[1].count)
    for key, f in ranked[:10]:
        retry = f" ({f.retryable} being retried)" if f.retryable else ""
        lines.append(f"- {short(key)}: {f.count}x{retry}, last: {f.last_reason[:160]}")
    if ranked[10:]:
        lines.append(f"- and {sum(f.count for _, f in ranked[10:])} more in "
                     f"{len(ranked) - 10} other place(s)")
    return "\n".join(lines)


def short(path: str) -> str:
    """The last three parts of a path (``HD_95086/autoreduced/20160315_H_Spec``)."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    return "/".join(parts[-3:])
