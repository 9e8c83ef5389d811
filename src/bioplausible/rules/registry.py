"""Name -> rule class registry. A new rule is one file with ``@register`` on its class."""

from ..errors import UserError

RULES: dict = {}


def register(cls):
    RULES[cls.name] = cls
    return cls


def make_rule(name: str, net, seed: int = 0, **options):
    """Build the rule ``name`` for ``net``; feedback matrices are drawn from ``seed``."""
    if name not in RULES:
        raise UserError(f"rule: unknown rule {name!r}; valid rules: {', '.join(RULES)}")
    return RULES[name](net, seed=seed, **options)
