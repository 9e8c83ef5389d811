"""The gradient pipeline between a rule's teaching signals and the optimizer.

The training loop asks a pipeline for three things, so privacy mechanisms plug in without touching
the loop:

* ``batches(n, batch_size, gen)``: the index tensors of one epoch (shuffled fixed-size batches, or
  Poisson sampling for DP-SGD);
* ``apply(teaching, rule, batch_size)``: turn the teaching terms into ``.grad`` of every trained
  parameter (plain ``s·δᵀh``, or clipped and noised);
* ``epoch_metrics(epochs_done)`` / ``summary()``: what the mechanism spent (ε) for the run's records.

``state()``/``load_state()`` carry its random generator through checkpoints for exact resume.
"""

from __future__ import annotations

import torch


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    return list(torch.split(perm, batch_size))


class Plain:
    """No privacy mechanism: exact pseudo-gradients, shuffled fixed-size batches."""

    private = False

    def batches(self, n, batch_size, gen):
        return shuffled_batches(n, batch_size, gen)

    def apply(self, teaching, rule, batch_size):
        rule.write_grads(teaching)

    def epoch_metrics(self, epochs_done: int) -> dict:
        return {}

    def summary(self) -> dict:
        return {"private": False}

    def state(self) -> dict:
        return {}

    def load_state(self, states: dict) -> None:
        pass
