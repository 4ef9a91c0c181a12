"""Measures written for other conventions, run as pgen measures.

:func:`register_complexity` takes a PGDL-competition-style ``complexity(model, dataset)``
function (the starting kit's submission format, here with a torch model) and registers it
as an ordinary pgen measure, so it is scored, checked (``pgen measures check``) and
benchmarked like every other. Its ``dataset`` argument is a :class:`Batches`: iterate it
for ``(x, y)`` batches, or call ``.batch(n)`` for batches of ``n`` as the kit's
``dataset.batch(n)`` reads; ``.x`` and ``.y`` hold the whole tensors. The kit's
complexities return larger values for models predicted to generalize worse, so the
default ``sign`` is +1.

>>> import torch
>>> def complexity(model, dataset):            # a kit-style submission
...     return float(sum(p.pow(2).sum() for p in model.parameters()))
>>> register_complexity(complexity, name="doc_example_sq", reference="this docstring")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from pgen.measures import MeasureError, model_device, register

__all__ = ["Batches", "register_complexity"]


class Batches:
    """``(x, y)`` batches of a measure's samples in one fixed order, on the model's device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, device):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.device = device

    def batch(self, n: int) -> Batches:
        """The same samples in batches of ``n`` (the kit's ``dataset.batch(n)``)."""
        return Batches(self.x, self.y, int(n), self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for a in range(0, len(self.x), self.batch_size):
            yield (self.x[a:a + self.batch_size].to(self.device).float(),
                   self.y[a:a + self.batch_size].to(self.device))

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)


def register_complexity(complexity: Callable, *, name: str, reference: str, description: str = "",
                        sign: int = 1, sign_reason: str = "", family: str = "submitted", needs_init: bool = False,
                        stochastic: bool = False, needs_images: bool = False) -> Callable:
    """Register ``complexity(model, dataset) -> float`` (``complexity(model, dataset,
    init_model)`` with ``needs_init``) as the pgen measure ``name``. ``reference`` says
    whose definition it is (a paper, a repository, "my submission"). Returns the measure
    function pgen calls."""
    if not callable(complexity):
        raise MeasureError(f"measure {name}: complexity must be a function complexity(model, dataset)")

    def measure(model, init_model, data, settings):
        batches = Batches(data.x, data.y, settings.batch_size, model_device(model))
        args = (model, batches, init_model) if needs_init else (model, batches)
        return float(complexity(*args))

    measure.__doc__ = complexity.__doc__
    register(name, description=description or f"PGDL-style complexity {getattr(complexity, '__name__', name)}",
             sign=sign, reference=reference, family=family, needs_init=needs_init, stochastic=stochastic,
             needs_images=needs_images, fidelity="faithful",
             sign_reason=sign_reason or "a PGDL-style complexity: larger predicts a larger generalization gap, as "
                                        "the competition's submissions return it")(measure)
    return measure
