"""`poolwarden run`'s fail-fast, with patience for what is not up yet.

A container often starts before the database or config service it needs:
the app's import raises `ConnectionRefusedError` twice, then works. So under
`run` (`on_startup_failure = "exit"`) a start-up failure before anything was
served prints its headline and traceback at once, and the pool retries with
its back-off (immediately, then 1 s doubling) up to rapid-fail protection's
limit (`max_crashes`, 5 by default); only when that is reached does `run`
exit 3 with the cause. A deterministic error still exits within about 15 s;
a transient one recovers. `exit-now` keeps the first failure fatal.

`Master` asks `StartupRetries.failed` on each start-up failure and writes
what it returns; the decision itself is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from poolwarden import channel as ch


@dataclass(slots=True)
class Verdict:
    """What to print (whole lines), and whether to give up now."""

    lines: list[str]
    exit: bool


@dataclass(slots=True)
class StartupRetries:
    """One pool's start-up failures under fail-fast, counted until it serves."""

    attempts: int
    """How many failed starts are tolerated in all (rapid-fail's `max_crashes`)."""
    failed: int = 0
    _shown: set[str] = field(default_factory=set)

    def failure(self, failure: ch.StartupFailure) -> Verdict:
        """A start-up failed: say so (the headline and traceback once per
        distinct failure), and say whether this was the last attempt."""
        self.failed += 1
        headline = failure.headline()
        lines: list[str] = []
        last = self.failed >= self.attempts
        if headline not in self._shown:
            self._shown.add(headline)
            lines.append(f"poolwarden: {headline}")
            if failure.traceback:
                lines.extend(failure.traceback.rstrip("\n").splitlines())
        if last:
            if self.attempts > 1:
                lines.append(f"poolwarden: giving up after {self.failed} failed starts: {headline}")
        else:
            lines.append(f"poolwarden: retrying, {self.failed + 1} of {self.attempts}")
        return Verdict(lines, exit=last)
