"""bioplausible: biologically plausible learning rules with real differential privacy."""

__version__ = "0.1.0"

from .network import MLP  # noqa: E402
from .rules import RULES, make_rule  # noqa: E402
from .config import TrainConfig, resolve  # noqa: E402
from .training import train  # noqa: E402

__all__ = ["MLP", "RULES", "TrainConfig", "make_rule", "resolve", "train", "__version__"]
