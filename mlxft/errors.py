"""The errors mlxft raises for things a user can fix: a message and a hint."""

from __future__ import annotations


class MlxftError(Exception):
    """A problem the user can act on. The CLI prints `message` and `hint` and exits 1."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class RecipeError(MlxftError):
    """A recipe that does not validate; `problems` lists every (location, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str]], hint: str | None = None):
        lines = "\n".join(f"  {loc}: {msg}" for loc, msg in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the recipe\n{lines}", hint)
        self.source = source
        self.problems = problems


class DataError(MlxftError):
    """Bad training data: names the file, line and field."""


class ModelError(MlxftError):
    """A model that cannot be found, read or loaded."""


class RunError(MlxftError):
    """A training run that failed, was stopped, or cannot be resumed."""


class BrokenFileError(ModelError):
    """A model, adapter or checkpoint file that is missing, truncated or malformed: `path` names it, `reason` says how."""

    def __init__(self, path, reason: str, hint: str | None = None):
        super().__init__(f"{path}: {reason}", hint)
        self.path = path
        self.reason = reason
