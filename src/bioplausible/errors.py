"""User-facing errors.

Every error the user can cause by bad input (an option, a file, a spec) is a :class:`UserError`.
The CLI prints its message on one line and exits with code 2; library users catch it like any
``ValueError``.
"""


class UserError(ValueError):
    """Bad input from the user: the message says what was wrong and what is accepted."""


class DataError(UserError):
    """A dataset file is missing, corrupt or hostile."""


def check_choice(name: str, value, choices) -> None:
    """Raise a UserError naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise UserError(f"{name}: invalid value {value!r}; accepted: {', '.join(map(str, choices))}")


def check_range(name: str, value, lo=None, hi=None, lo_open=False, hi_open=False, kind=float):
    """Return ``value`` converted to ``kind`` and checked to lie within [lo, hi] (or open ends).

    Booleans are refused (``True`` is not the number 1 here), an ``int`` must be integral (``2.5`` is
    refused, not truncated) and a ``float`` must be finite (not NaN or infinite).
    """
    if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise UserError(f"{name}: invalid value {value!r}; expected {kind.__name__}")
    try:
        v = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name}: invalid value {value!r}; expected {kind.__name__}") from None
    if kind is float and v != v:
        raise UserError(f"{name}: invalid value {value!r}; expected a number, not NaN")
    if kind is float and v in (float("inf"), float("-inf")):
        raise UserError(f"{name}: invalid value {value!r}; expected a finite number")
    bad = False
    if lo is not None and (v < lo or (lo_open and v == lo)):
        bad = True
    if hi is not None and (v > hi or (hi_open and v == hi)):
        bad = True
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise UserError(
            f"{name}: invalid value {value!r}; accepted: {kind.__name__} in "
            f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        )
    return v
