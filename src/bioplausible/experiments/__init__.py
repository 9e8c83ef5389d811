"""Experiments: TOML specs expanded into runs, sweeps on local processes or Ray, and the run store.

    from bioplausible.experiments import load_spec, Store, sweep
    spec = load_spec("quick")                 # a shipped spec by name, or a path
    with Store("runs/store") as store:
        sweep(spec, store, workers=2)         # idempotent: finished runs are skipped
        rows = store.runs(spec="quick")
"""

from .runner import sweep
from .spec import Run, Spec, find_spec, load_spec, parse_spec, shipped_specs
from .store import Store, export_csv

__all__ = ["Run", "Spec", "Store", "export_csv", "find_spec", "load_spec", "parse_spec", "shipped_specs", "sweep"]
