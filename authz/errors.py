"""Configuration errors that name the file, the path inside it and the problem."""

from __future__ import annotations

from pydantic import ValidationError


class ConfigError(Exception):
    """A rules, accounts or settings file is unusable; the message says where and why."""

    def __init__(self, file: str, path: str, problem: str) -> None:
        self.file = file
        self.path = path
        self.problem = problem
        where = f"{file}: {path}" if path else file
        super().__init__(f"{where}: {problem}")


def format_validation_error(
    file: str, exc: ValidationError, *, prefix: str = "", lines: dict[str, int] | None = None
) -> ConfigError:
    """The first pydantic error as a ConfigError with a dotted path.

    `lines` maps dotted paths to source line numbers, when the loader knows them.
    """
    err = exc.errors()[0]
    # Drop the type tags pydantic adds inside unions ("function-after[...]", "str").
    parts = [str(p) for p in err["loc"] if isinstance(p, int) or "[" not in str(p)]
    path = ".".join(parts)
    if prefix:
        path = f"{prefix}: {path}" if path else prefix
    kind = err["type"]
    if kind == "extra_forbidden":
        problem = "unknown key"
    elif kind == "missing":
        problem = "required key is missing"
    elif kind == "value_error":
        # Our own validators name the offending value themselves.
        problem = err["msg"].removeprefix("Value error, ")
    else:
        problem = err["msg"]
        # Never echo a value that may be a secret (an accounts file's `secret`).
        if "input" in err and kind not in {"model_type", "dict_type"} and "secret" not in parts:
            shown = repr(err["input"])
            problem += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    if lines:
        line = _nearest_line(parts, lines)
        if line is not None:
            file = f"{file}:{line}"
    return ConfigError(file, path, problem)


def _nearest_line(parts: list[str], lines: dict[str, int]) -> int | None:
    for n in range(len(parts), 0, -1):
        line = lines.get(".".join(parts[:n]))
        if line is not None:
            return line
    return lines.get("")
