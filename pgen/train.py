"""Deterministic training of small models, with checkpoints at epochs and iterations."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pgen.data import dataset_arrays
from pgen.devices import model_device
from pgen.errors import InputError

__all__ = ["TrainConfig", "evaluate", "train_model", "training_data"]

# A run whose training cross-entropy stays at >= this fraction of ln(classes) (a constant
# prediction's loss) is at chance level; see TrainConfig.stop_at_chance_epochs.
CHANCE_FRACTION = 0.95


@dataclass
class TrainConfig:
    """Training settings (the non-architecture hparams of a zoo grid).

    ``checkpoint_epochs`` are epoch numbers (0 = the initial weights) at whose end a
    checkpoint is taken; ``checkpoint_iterations`` are global optimizer steps (1-based,
    so ``[1, 5, 10]`` are inside the first epoch for any batch count above 10).

    ``target_train_loss`` trains to a criterion, as Jiang et al. 2019 ("Fantastic
    generalization measures", section 4: cross-entropy 0.01) and the PGDL competition do:
    training stops at the end of the first epoch whose training cross-entropy (eval mode,
    on the model's own training samples and labels) is at most this value; ``epochs`` is
    then the cap, and a model that reaches it without meeting the criterion is recorded
    as not converged.

    ``stop_at_chance_epochs`` (with a criterion only) ends a run that cannot meet it: once
    its training cross-entropy has stayed at chance level (at least 95% of ln(classes), the
    loss of a constant prediction) for that many consecutive epochs, or is not finite,
    training stops as not converged and the info says ``stalled``. Such runs are left out
    of rankings like any other unconverged run; without the rule they train to the cap.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    label_noise: float = 0.0
    train_fraction: float = 1.0
    seed: int = 0
    checkpoint_epochs: list[int] = field(default_factory=list)
    checkpoint_iterations: list[int] = field(default_factory=list)
    target_train_loss: float | None = None
    stop_at_chance_epochs: int | None = None

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise InputError(f"invalid training settings: {self}")
        if not 0 <= self.label_noise < 1 or not 0 < self.train_fraction <= 1:
            raise InputError("label_noise must be in [0, 1) and train_fraction in (0, 1]")
        if self.optimizer not in ("sgd", "adam"):
            raise InputError(f"optimizer must be 'sgd' or 'adam'; got {self.optimizer!r}")
        if self.target_train_loss is not None and not self.target_train_loss > 0:
            raise InputError(f"target_train_loss must be positive; got {self.target_train_loss}")
        if self.stop_at_chance_epochs is not None and (self.target_train_loss is None
                                                        or not self.stop_at_chance_epochs >= 1):
            raise InputError("stop_at_chance_epochs needs target_train_loss and must be at least 1; "
                             f"got {self.stop_at_chance_epochs}")


@torch.inference_mode()  # on a generator: entered at each resume, left at each yield
def batch_logits(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024):
    """``(logits, labels)`` of each batch in order, float32 on the model's device, in eval
    mode without autograd; the model's training flag comes back when the batches run out
    (or the generator is closed). The batches behind every accuracy pgen computes."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    try:
        for a in range(0, len(labels), batch_size):
            x = inputs[a : a + batch_size].to(device)
            yield model(x if x.is_floating_point() else x.float()).float(), labels[a : a + batch_size].to(device)
    finally:
        model.train(was_training)


def batch_outcome(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, float]:
    """(correct, summed cross-entropy) of one batch: what :func:`evaluate` adds up."""
    return int((logits.argmax(1) == labels).sum()), float(nn.functional.cross_entropy(logits, labels, reduction="sum"))


def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on tensors, in eval mode, batched on the
    model's device. The one accuracy function: training, scoring and the measures use it."""
    correct, loss, n = 0, 0.0, len(labels)
    for logits, y in batch_logits(model, inputs, labels, batch_size):
        c, l = batch_outcome(logits, y)
        correct, loss = correct + c, loss + l
    return correct / n, loss / n


def training_data(labels: torch.Tensor, cfg: TrainConfig, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices into the training split, the labels the model was trained on): the
    ``train_fraction`` subset and the ``label_noise`` flips that :func:`train_model` draws
    from ``cfg.seed``. The one definition, so that scoring can see exactly what a model saw."""
    return _training_labels(labels, cfg, num_classes, np.random.default_rng(cfg.seed))


def _training_labels(labels: torch.Tensor, cfg: TrainConfig, num_classes: int, rng: np.random.Generator):
    n = len(labels)
    keep = np.sort(rng.permutation(n)[: max(1, int(round(cfg.train_fraction * n)))])
    y = labels[keep].clone()
    if cfg.label_noise > 0:
        flip = rng.random(len(y)) < cfg.label_noise
        # A random *other* class for each flipped label.
        offsets = torch.from_numpy(rng.integers(1, num_classes, size=int(flip.sum())))
        y[torch.from_numpy(flip)] = (y[torch.from_numpy(flip)] + offsets) % num_classes
    return torch.from_numpy(keep), y


def train_model(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset | None,
    cfg: TrainConfig,
    *,
    num_classes: int,
    on_checkpoint: Callable[[dict, nn.Module], None] | None = None,
) -> dict:
    """Train ``model`` in place; return the final metrics.

    ``on_checkpoint(info, model)`` is called with ``info = {"epoch", "step",
    "train_acc", "train_loss", "test_acc", "test_loss"}`` at every requested checkpoint
    (epoch 0 is before any step) and at the last step; with ``cfg.target_train_loss``
    the last checkpoint's info also has ``converged``. Same seed, same data, same result.
    """
    cfg.validate()
    gen = torch.Generator().manual_seed(cfg.seed)
    x_all, y_all = dataset_arrays(train_set)
    keep, y_train = training_data(y_all, cfg, num_classes)
    x_train = x_all[keep]
    x_test, y_test = dataset_arrays(test_set) if test_set is not None else (None, None)

    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def metrics(epoch, step):
        out = {"epoch": epoch, "step": step}
        out["train_acc"], out["train_loss"] = evaluate(model, x_train, y_train)
        if x_test is not None:
            out["test_acc"], out["test_loss"] = evaluate(model, x_test, y_test)
        return out

    def checkpoint(epoch, step):
        info = metrics(epoch, step)
        if on_checkpoint is not None:
            on_checkpoint(info, model)
        return info

    step = 0
    last = None
    its = set(cfg.checkpoint_iterations)
    if 0 in cfg.checkpoint_epochs or 0 in its:
        last = checkpoint(0, 0)
    n = len(y_train)
    converged = None
    stalled = False
    chance_run = 0  # consecutive epochs at chance-level training loss
    chance_loss = CHANCE_FRACTION * math.log(num_classes)
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen)
        for a in range(0, n, cfg.batch_size):
            idx = order[a : a + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            step += 1
            if step in its:
                last = checkpoint(epoch, step)
        if epoch in cfg.checkpoint_epochs:
            last = checkpoint(epoch, step)
        if cfg.target_train_loss is not None:
            train_ce = evaluate(model, x_train, y_train)[1]
            converged = train_ce <= cfg.target_train_loss
            if converged:
                break
            if cfg.stop_at_chance_epochs:
                chance_run = chance_run + 1 if train_ce >= chance_loss else 0
                if not math.isfinite(train_ce) or chance_run >= cfg.stop_at_chance_epochs:
                    stalled = True
                    break
    model.eval()
    if converged is not None:
        # the last checkpoint carries the outcome; taken here even when it was requested
        # at this epoch already, so that it is the one with "converged" in it
        info = metrics(epoch, step) if last is None or last["step"] != step else dict(last)
        info["converged"] = bool(converged)
        if stalled:
            info["stalled"] = True
        if on_checkpoint is not None:
            on_checkpoint(info, model)
        return info
    if last is None or last["step"] != step:
        last = checkpoint(epoch, step)
    return last
