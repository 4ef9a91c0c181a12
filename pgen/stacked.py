"""Train many Small CNNs at once: the Small CNN Zoo's runs, stacked.

A Small CNN (:class:`pgen.models.SmallCNN`: 3 x Conv2d(16, 3x3, stride 2) on 28x28 inputs)
is so small that training it one run at a time is bound by per-step overhead, not by
arithmetic: one run took 3.7 ms per Adam step at batch 32 on one core, most of it in the
dispatch of a dozen tiny kernels. Stacking R runs of one shape as the groups of grouped
convolutions makes one step train all R (``benchmarks/stacked_training.py`` measures the
ratio), and every run keeps what makes it itself:

* its own ``torch.Generator``, seeded by the run's seed and used in a fixed order (initial
  weights, training subset, each epoch's order, dropout masks), so a run's draws do not
  depend on which runs share its stack;
* its own learning rate, L2 strength, dropout rate and initializer;
* its own divergence: a run whose loss or weights turn non-finite is frozen at its last
  finite weights and flagged, as the authors' runs stop on NaN, while the others go on.

The optimizers follow torch's formulas (``torch.optim.SGD`` without momentum, ``Adam``,
``RMSprop``) with Keras's defaults, which the authors trained with (``tf.keras.optimizers.get``:
Adam betas (0.9, 0.999), eps 1e-7; RMSprop rho 0.9, eps 1e-7). Keras's Adam adds its eps to
sqrt(v) before bias correction, torch's after: the two differ only while sqrt(v_hat) is
near 1e-7. L2 follows Keras's ``kernel_regularizer=l2(lambda)``: lambda * sum(w**2) over the
kernels (not the biases) is added to the loss. ``tests/test_stacked.py`` checks the stacked
path against plain ``nn.Module`` + ``torch.optim`` training of each run alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pgen.errors import InputError
from pgen.models import SMALLCNN_ACTIVATIONS, SmallCNN

__all__ = ["OPTIMIZERS", "W_INITS", "RunSpec", "StackedSmallCNN", "initial_weights", "train_stack"]

OPTIMIZERS = ("sgd", "adam", "rmsprop")
W_INITS = ("he_normal", "glorot_normal", "orthogonal", "RandomNormal", "TruncatedNormal")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-7
RMSPROP_RHO, RMSPROP_EPS = 0.9, 1e-7
_KERAS_TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]: Keras divides by it


@dataclass(frozen=True)
class RunSpec:
    """One run's own settings (those a stack shares: optimizer, activation, train size, are
    arguments of :func:`train_stack`)."""
    seed: int
    learning_rate: float
    l2reg: float = 0.0
    dropout: float = 0.0
    w_init: str = "he_normal"
    init_std: float = 0.05


def _layer_shapes(in_channels: int, filters: int, layers: int, num_classes: int) -> list[tuple]:
    shapes, c = [], in_channels
    for _ in range(layers):
        shapes.append((filters, c, 3, 3))
        c = filters
    shapes.append((num_classes, filters))
    return shapes


def _fill(w: torch.Tensor, w_init: str, init_std: float, gen: torch.Generator) -> None:
    """Keras's initializer ``w_init`` (google-research ``train_network.py``: the std applies
    to RandomNormal and TruncatedNormal only) on a torch-layout weight. Keras's fans are
    torch's (kh*kw*in, kh*kw*out); its truncated normals cut at two stds, and its variance
    scaling divides the std by the truncated unit normal's std so that the result has the
    intended variance."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
    if w_init in ("he_normal", "glorot_normal"):
        var = 2.0 / fan_in if w_init == "he_normal" else 2.0 / (fan_in + fan_out)
        std = math.sqrt(var) / _KERAS_TRUNC_STD
        nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std, generator=gen)
    elif w_init == "TruncatedNormal":
        nn.init.trunc_normal_(w, 0.0, init_std, -2 * init_std, 2 * init_std, generator=gen)
    elif w_init == "RandomNormal":
        nn.init.normal_(w, 0.0, init_std, generator=gen)
    elif w_init == "orthogonal":  # Haar-distributed, as Keras's (which orthogonalizes the transposed flattening)
        nn.init.orthogonal_(w, 1.0, generator=gen)
    else:
        raise InputError(f"unknown w_init {w_init!r}; one of {', '.join(W_INITS)}")


def initial_weights(spec: RunSpec, gen: torch.Generator, *, in_channels=1, filters=16, layers=3,
                    num_classes=10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(kernel, bias) per layer in torch layout: kernels from ``spec.w_init``, biases zero
    (the authors' ``b_init='zero'``)."""
    out = []
    for shape in _layer_shapes(in_channels, filters, layers, num_classes):
        w = torch.empty(shape)
        _fill(w, spec.w_init, spec.init_std, gen)
        out.append((w, torch.zeros(shape[0])))
    return out


class StackedSmallCNN:
    """R Small CNNs as one set of stacked tensors: conv kernels (R*filters, in, 3, 3) used as
    the groups of a grouped convolution, the dense layer as (R, classes, filters)."""

    def __init__(self, weights: list[list[tuple[torch.Tensor, torch.Tensor]]], activation: str):
        if activation not in SMALLCNN_ACTIVATIONS:
            raise InputError(f"unknown activation {activation!r}; one of {', '.join(SMALLCNN_ACTIVATIONS)}")
        self.R = len(weights)
        self.activation = SMALLCNN_ACTIVATIONS[activation]()
        n_layers = len(weights[0])
        self.params: list[torch.Tensor] = []  # kernel, bias per layer; each viewable as (R, -1)
        for li in range(n_layers):
            ks = [w[li][0] for w in weights]
            bs = [w[li][1] for w in weights]
            if li < n_layers - 1:
                self.params += [torch.cat(ks).contiguous(), torch.cat(bs).contiguous()]
            else:
                self.params += [torch.stack(ks).contiguous(), torch.stack(bs).contiguous()]
        for p in self.params:
            p.requires_grad_(True)

    @property
    def kernels(self) -> list[torch.Tensor]:
        return self.params[0::2]

    def forward(self, x: torch.Tensor, dropout=None) -> torch.Tensor:
        """x: (B, R * in_channels, H, W), run r's inputs in channels r*in..; ``dropout``: one
        callable per hidden layer mapping its activations (B, R*filters, h, w) to the dropped
        ones, or None (eval mode). Returns logits (B, R, classes)."""
        # channels-last: oneDNN's grouped convolution (backward above all) is 1.5x faster in it
        # than in the default layout (benchmarks/stacked_training.py prints the ratio)
        cl = torch.channels_last
        h = x.contiguous(memory_format=cl)
        convs = len(self.params) // 2 - 1
        for li in range(convs):
            kernel = self.params[2 * li].contiguous(memory_format=cl)
            h = self.activation(F.conv2d(h, kernel, self.params[2 * li + 1], stride=2, groups=self.R))
            if dropout is not None:
                h = dropout(h)
        B = h.shape[0]
        h = h.mean(dim=(2, 3)).view(B, self.R, -1)
        return torch.einsum("brf,rcf->brc", h, self.params[-2]) + self.params[-1]

    def run_weights(self, r: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Run r's (kernel, bias) per layer in torch layout (copies)."""
        out = []
        n_layers = len(self.params) // 2
        for li in range(n_layers):
            k, b = self.params[2 * li], self.params[2 * li + 1]
            if li < n_layers - 1:
                f = k.shape[0] // self.R
                out.append((k[r * f:(r + 1) * f].detach().clone(), b[r * f:(r + 1) * f].detach().clone()))
            else:
                out.append((k[r].detach().clone(), b[r].detach().clone()))
        return out


def load_into(model: SmallCNN, weights: list[tuple[torch.Tensor, torch.Tensor]]) -> SmallCNN:
    layers = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for m, (k, b) in zip(layers, weights):
            m.weight.copy_(k)
            m.bias.copy_(b)
    return model


def _per_run(t: torch.Tensor, R: int) -> torch.Tensor:
    return t.view(R, -1)


class _Optimizer:
    """sgd / adam / rmsprop on stacked tensors with one learning rate per run; a frozen run's
    weights and state do not move."""

    def __init__(self, name: str, params: list[torch.Tensor], lr: torch.Tensor):
        if name not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {name!r}; one of {', '.join(OPTIMIZERS)}")
        self.name, self.params, self.lr = name, params, lr.view(-1, 1)
        self.R = lr.numel()
        self.t = 0
        self.m = [torch.zeros_like(p).view(self.R, -1) for p in params] if name == "adam" else None
        self.v = [torch.zeros_like(p).view(self.R, -1) for p in params] if name != "sgd" else None

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], active: torch.Tensor) -> None:
        self.t += 1
        keep = active.view(-1, 1)
        for i, (p, g) in enumerate(zip(self.params, grads)):
            p2, g2 = _per_run(p, self.R), _per_run(g, self.R)
            if self.name == "sgd":
                update = self.lr * g2
            elif self.name == "rmsprop":
                v = torch.where(keep, self.v[i] * RMSPROP_RHO + (1 - RMSPROP_RHO) * g2 * g2, self.v[i])
                self.v[i] = v
                update = self.lr * g2 / (v.sqrt() + RMSPROP_EPS)
            else:
                b1, b2 = ADAM_BETAS
                m = torch.where(keep, self.m[i].lerp(g2, 1 - b1), self.m[i])
                v = torch.where(keep, self.v[i] * b2 + (1 - b2) * g2 * g2, self.v[i])
                self.m[i], self.v[i] = m, v
                bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
                update = (self.lr / bc1) * m / (v.sqrt() / math.sqrt(bc2) + ADAM_EPS)
            p2.sub_(torch.where(keep, update, torch.zeros((), dtype=p.dtype)))


def _dropout_fn(gens: list[torch.Generator], rates: list[float]):
    """Keras's Dropout per run (drop with probability ``rate``, scale the kept by
    1 / (1 - rate)), each run's mask from its own generator; runs with rate 0 draw nothing.

    A mask element is one random byte compared with ``rate * 256``, so rates must be
    multiples of 1/256: eight mask elements per 64-bit draw instead of one float draw each
    (the float draws were about a fifth of a stacked training step in a profile).
    """
    R = len(gens)
    thresholds = []
    for rate in rates:
        k = round(rate * 256)
        if not 0 <= k < 256 or abs(k / 256 - rate) > 1e-12:
            raise InputError(f"dropout rate {rate!r} must be a multiple of 1/256 in [0, 1)")
        thresholds.append(k)
    if not any(thresholds):
        return None
    cache: dict = {}

    def apply(h: torch.Tensor) -> torch.Tensor:
        B, C, H, W = h.shape
        f = C // R
        if f not in cache:
            cache[f] = (torch.tensor(thresholds, dtype=torch.uint8).repeat_interleave(f),
                        torch.tensor([1 / (1 - k / 256) for k in thresholds], dtype=h.dtype).repeat_interleave(f))
        threshold, scale = cache[f]
        n = B * H * W * f
        parts = []  # channels-last, as h is: (B, H, W, f) per run
        for gen, k in zip(gens, thresholds):
            if k:
                draws = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-2 ** 63, None, generator=gen)
                parts.append(draws.view(torch.uint8)[:n].view(B, H, W, f))
            else:
                parts.append(torch.zeros((B, H, W, f), dtype=torch.uint8))
        mask = (torch.cat(parts, dim=3) >= threshold) * scale
        return h * mask.permute(0, 3, 1, 2)

    return apply


def _finite(value: float) -> float | None:
    """A loss, or None where it is not finite (a diverged run's huge weights overflow it)."""
    return value if math.isfinite(value) else None


def _stack_inputs(x: torch.Tensor) -> torch.Tensor:
    """(R, B, C, H, W) -> (B, R*C, H, W)."""
    R, B, C, H, W = x.shape
    return x.permute(1, 0, 2, 3, 4).reshape(B, R * C, H, W)


@torch.no_grad()
def _evaluate(model: StackedSmallCNN, x: torch.Tensor, y: torch.Tensor, batch: int = 500):
    """Accuracy and mean cross-entropy per run in eval mode; x: (R, n, C, H, W), y: (R, n)."""
    R, n = y.shape
    correct = torch.zeros(R, dtype=torch.float64)
    loss = torch.zeros(R, dtype=torch.float64)
    for s in range(0, n, batch):
        xb, yb = x[:, s:s + batch], y[:, s:s + batch]
        logits = model.forward(_stack_inputs(xb))  # (b, R, classes)
        lg = logits.permute(1, 0, 2)  # (R, b, classes)
        correct += (lg.argmax(-1) == yb).sum(1).double()
        loss += F.cross_entropy(lg.reshape(-1, lg.shape[-1]), yb.reshape(-1), reduction="none").view(R, -1).sum(1).double()
    return (correct / n).tolist(), (loss / n).tolist()


def train_stack(specs: list[RunSpec], *, optimizer: str, activation: str, train_x: torch.Tensor,
                train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, train_size: int,
                epochs: int, checkpoint_epochs, batch_size: int = 32, on_checkpoint=None,
                filters: int = 16, layers: int = 3, num_classes: int = 10) -> dict:
    """Train the runs ``specs`` together, each as if alone.

    Every run draws, from ``torch.Generator().manual_seed(spec.seed)`` in this order: its
    initial weights, its ``train_size`` training samples (a random subset of ``train_x``,
    as the authors' ``shuffle(...).take(...)``), then per epoch a permutation of them, cut
    into batches of ``batch_size`` with the remainder dropped (theirs: ``drop_remainder``),
    and per step its dropout masks.

    ``on_checkpoint(epoch, step, r, weights, metrics)`` is called for every run at every epoch
    in ``checkpoint_epochs`` (0 is the initial weights), with eval-mode accuracy and
    cross-entropy on the run's training subset and on the test set, the run's L2 penalty
    (``l2reg * sum of squared kernels``, which Keras adds to the loss it reports) and, once a
    run has diverged, ``diverged=True`` and the step it happened at. Returns
    ``{"indices": [per-run subset indices], "diverged_step": [step or None]}``.
    """
    R = len(specs)
    if R == 0:
        raise InputError("train_stack needs at least one run")
    n_train = train_x.shape[0]
    if not 1 <= train_size <= n_train:
        raise InputError(f"train_size {train_size} is not between 1 and {n_train}")
    steps_per_epoch = train_size // batch_size
    if steps_per_epoch < 1:
        raise InputError(f"train_size {train_size} is smaller than one batch of {batch_size}")
    if train_x.dim() == 3:
        train_x, test_x = train_x[:, None], test_x[:, None]
    gens = [torch.Generator().manual_seed(int(s.seed)) for s in specs]
    weights = [initial_weights(s, g, in_channels=train_x.shape[1], filters=filters, layers=layers,
                               num_classes=num_classes) for s, g in zip(specs, gens)]
    indices = torch.stack([torch.randperm(n_train, generator=g)[:train_size] for g in gens])  # (R, n)
    model = StackedSmallCNN(weights, activation)
    lr = torch.tensor([s.learning_rate for s in specs], dtype=torch.float32)
    l2 = torch.tensor([s.l2reg for s in specs], dtype=torch.float32).view(R, 1)
    opt = _Optimizer(optimizer, model.params, lr)
    kernel_ids = set(range(0, len(model.params), 2))
    active = torch.ones(R, dtype=torch.bool)
    diverged_step: list[int | None] = [None] * R
    drop = _dropout_fn(gens, [s.dropout for s in specs])
    checkpoint_epochs = sorted(set(checkpoint_epochs))
    own_x, own_y = train_x[indices], train_y[indices]  # (R, n, C, H, W), (R, n)
    test_xr = test_x.expand(R, *test_x.shape)
    test_yr = test_y.expand(R, *test_y.shape)

    def checkpoint(epoch: int, step: int) -> None:
        if on_checkpoint is None:
            return
        tr_acc, tr_loss = _evaluate(model, own_x, own_y)
        te_acc, te_loss = _evaluate(model, test_xr, test_yr)
        with torch.no_grad():
            penalty = (l2 * torch.cat([_per_run(k, R).pow(2).sum(1, keepdim=True) for k in model.kernels], 1)
                       .sum(1, keepdim=True)).view(R).double().tolist()
        for r in range(R):
            metrics = {"train_acc": tr_acc[r], "test_acc": te_acc[r], "train_loss": _finite(tr_loss[r]),
                       "test_loss": _finite(te_loss[r]), "l2_penalty": _finite(penalty[r]),
                       "diverged": diverged_step[r] is not None}
            if diverged_step[r] is not None:
                metrics["diverged_step"] = diverged_step[r]
            on_checkpoint(epoch, step, r, model.run_weights(r), metrics)

    offsets = torch.arange(R)[:, None] * train_size
    own_x_flat = own_x.reshape(R * train_size, *own_x.shape[2:])
    step = 0
    if 0 in checkpoint_epochs:
        checkpoint(0, 0)
    for epoch in range(1, epochs + 1):
        order = torch.stack([torch.randperm(train_size, generator=g) for g in gens])  # (R, n)
        for s in range(steps_per_epoch):
            batch = order[:, s * batch_size:(s + 1) * batch_size]
            flat = (batch + offsets).flatten()  # index_select: 8x faster than advanced indexing here
            xb = own_x_flat.index_select(0, flat).view(R, batch_size, *own_x.shape[2:])
            yb = own_y.flatten().index_select(0, flat).view(R, batch_size)
            logits = model.forward(_stack_inputs(xb), drop)  # (B, R, classes)
            lg = logits.permute(1, 0, 2)
            losses = F.cross_entropy(lg.reshape(-1, num_classes), yb.reshape(-1), reduction="none") \
                .view(R, -1).mean(1)
            grads = [g.contiguous() for g in torch.autograd.grad(losses.sum(), model.params)]
            step += 1
            with torch.no_grad():
                grads = [(_per_run(g, R) + 2 * l2 * _per_run(p, R)).view_as(p) if i in kernel_ids else g
                         for i, (g, p) in enumerate(zip(grads, model.params))]
                backup = [p.detach().clone() for p in model.params]
                opt.step(grads, active)
                finite = torch.isfinite(losses.detach())
                for p in model.params:
                    finite &= torch.isfinite(_per_run(p, R)).all(1)
                bad = active & ~finite
                if bad.any():  # freeze at the last finite weights, as the authors' runs stop on NaN
                    for p, old in zip(model.params, backup):
                        _per_run(p, R)[bad] = _per_run(old, R)[bad]
                    for r in bad.nonzero().flatten().tolist():
                        diverged_step[r] = step
                    active &= ~bad
        if epoch in checkpoint_epochs:
            checkpoint(epoch, step)
    return {"indices": indices, "diverged_step": diverged_step}
