"""The SDK's one error tree.

```
AibError
├── TemplateError            a template breaks a rule (one or more issues, each with a JSON path)
├── UsageError               the caller asked for something impossible (bad option, missing --param)
│   └── MissingParamsError   the template needs parameters that were not given (every one of them named)
├── PluginError              a provider could not be loaded, or two provide the same type name
└── BuildError               something failed while running a build
    ├── FetchError           a scriptUri/sourceUri/image could not be fetched
    │   └── ChecksumError    fetched content does not match its sha256Checksum
    ├── SourceError          the source image could not be resolved
    ├── BuildHostError       the build VM could not be started, reached or shut down
    ├── CommunicatorError    the connection to the guest failed
    │   └── CommandTimeout   a command ran past its deadline
    ├── StepError            a customizer or validator failed (step, exit code, last log lines)
    ├── DistributeError      publishing to a target failed
    │   └── ConflictError    the target already holds what we publish (e.g. a gallery version)
    ├── BuildTimeout         buildTimeoutInMinutes ran out (BuildResult.raise_for_state())
    └── BuildCancelled       the build was cancelled (BuildResult.raise_for_state())
```

Foreign exceptions (asyncssh, httpx, botocore, azure) are mapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class AibError(Exception):
    """Root of every error the SDK raises on purpose."""


@dataclass(frozen=True)
class Issue:
    """One problem found in a template: where (a JSON path) and what (the rule broken)."""

    path: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        prefix = f"{self.path}: " if self.path else ""
        tag = "warning: " if self.severity == "warning" else ""
        return f"{prefix}{tag}{self.message}"


class TemplateError(AibError):
    """A template is invalid. ``issues`` holds every error found, each naming its JSON path and rule."""

    def __init__(self, issues: Sequence[Issue], *, warnings: Sequence[Issue] = ()) -> None:
        self.issues = list(issues)
        self.warnings = list(warnings)
        super().__init__("\n".join(str(i) for i in self.issues) or "invalid template")


class UsageError(AibError):
    """The caller asked for something that cannot be done as asked."""


class MissingParamsError(UsageError):
    """A run needs parameters the caller did not give; ``names`` lists every one of them."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


class PluginError(AibError):
    """A plugin could not be loaded or conflicts with another."""


class BuildError(AibError):
    """A build failed at run time."""


class FetchError(BuildError):
    """An input (script, file, image) could not be fetched."""


class ChecksumError(FetchError):
    """Fetched content does not match the expected sha256 checksum."""

    def __init__(self, uri: str, expected: str, actual: str) -> None:
        self.uri, self.expected, self.actual = uri, expected, actual
        super().__init__(f"sha256 mismatch for {uri}: expected {expected}, got {actual}")


class SourceError(BuildError):
    """The source image could not be resolved or prepared."""


class BuildHostError(BuildError):
    """The build VM could not be started, reached, or stopped."""


class CommunicatorError(BuildError):
    """The connection to the guest failed."""


class CommandTimeout(CommunicatorError):
    """A command ran past its deadline."""


class StepError(BuildError):
    """A customizer or validator failed.

    The message names the step, its exit code and the last lines of its log, so a user needs nothing else
    to see what went wrong.
    """

    def __init__(
        self,
        step: str,
        message: str,
        *,
        exit_code: int | None = None,
        log_tail: Sequence[str] = (),
    ) -> None:
        self.step, self.exit_code, self.log_tail = step, exit_code, list(log_tail)
        text = f"step {step!r} failed: {message}"
        if exit_code is not None and "exit code" not in message:
            text += f" (exit code {exit_code})"
        if self.log_tail:
            text += "\nlast log lines:\n" + "\n".join(f"  {line}" for line in self.log_tail)
        super().__init__(text)


class DistributeError(BuildError):
    """Publishing an artifact to one target failed."""


class ConflictError(DistributeError):
    """The target already holds what would be published."""


class BuildTimeout(BuildError):
    """The build ran past buildTimeoutInMinutes (or --timeout); see :meth:`BuildResult.raise_for_state`."""


class BuildCancelled(BuildError):
    """The build was cancelled; see :meth:`BuildResult.raise_for_state`."""
