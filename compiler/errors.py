"""User-facing errors. The CLI prints these without a traceback and exits non-zero."""
from __future__ import annotations


class TinycError(Exception):
    """An error in the user's input: says what is wrong, where, and what to do."""

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None):
        self.what, self.where, self.hint = what, where, hint
        super().__init__(self.format())

    def format(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(f"  at {self.where}")
        if self.hint:
            parts.append(f"  hint: {self.hint}")
        return "\n".join(parts)


class FrontendError(TinycError):
    """The model cannot be imported (unsupported op, untrusted pickle, bad file)."""


class ParseError(TinycError):
    """IR text or a pipeline string is malformed."""


class VerifyError(TinycError):
    """The IR breaks an invariant (names the op)."""


class PassError(TinycError):
    """A pass cannot be applied as asked."""


class BackendError(TinycError):
    """Code generation, compilation or running on a target failed."""
