"""Benchmark: each expensive measure's seconds against the passes it runs (#37 item 1).

A flatness measure's search decides how many forward and forward+backward passes it runs;
the code around the passes decides the rest. This script separates the two. For every
final model of the given zoos (every ``--every``-th) and every measure it

1. counts the model's outermost forward calls while the measure runs (a global forward
   pre-hook: whether gradients were on, and the batch size), with ``--seed``;
2. times the measure again with the same seed and no hook (the same passes: the seed fixes
   them);
3. times one bare pass of each kind and batch size it counted on the same model, in the
   same process: a forward under ``torch.no_grad``, or a forward, the cross-entropy and
   ``torch.autograd.grad`` with respect to the parameters (median of 3 rounds);

and prints, per zoo and measure, the median and maximum seconds, the **floor** (the
counted passes times their bare times: what the measure would cost if it did nothing but
its passes), ``seconds / floor``, and the passes as epochs over the measure's samples (all
the samples of the passes over the number the measure was given). A ratio near 1 says the
measure is bound by its passes: only a search that runs fewer passes makes it cheaper, and
a smaller ratio would need a faster forward pass. The data are those ``pgen score`` gives
the measures (the first ``--n`` training samples, or the model's own), one thread.

Usage::

    python benchmarks/measure_floor.py fantastic-mnist5k mnist5k --every 4
    python benchmarks/measure_floor.py mnist5k --measures kit_sharpness --every 8 --json floor.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

MEASURES = ("sharpness", "mag_sharpness", "pacbayes_flatness", "pacbayes_mag_flatness", "kit_sharpness")


class PassCounter:
    """Counts the outermost module calls (a model's forward passes) while active:
    ``counts[(with_grad, batch_size)]``. Module calls inside another are not passes."""

    def __init__(self):
        self.counts: dict[tuple[bool, int], int] = {}
        self._depth = 0

    def _pre(self, module, args):
        if self._depth == 0 and args and isinstance(args[0], torch.Tensor):
            key = (torch.is_grad_enabled(), int(args[0].shape[0]))
            self.counts[key] = self.counts.get(key, 0) + 1
        self._depth += 1

    def _post(self, module, args, output):
        self._depth -= 1

    def __enter__(self):
        self._handles = [torch.nn.modules.module.register_module_forward_pre_hook(self._pre),
                         torch.nn.modules.module.register_module_forward_hook(self._post)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()


def bare_pass_seconds(model, x, y, with_grad: bool, batch: int, rounds: int = 3) -> float:
    """Median seconds of one bare pass of ``batch`` samples: a forward under no_grad, or a
    forward, the cross-entropy and its gradient with respect to the parameters."""
    xb, yb = x[:batch], y[:batch]
    params = [p for p in model.parameters() if p.requires_grad]

    def one():
        if with_grad:
            with torch.enable_grad():
                torch.autograd.grad(torch.nn.functional.cross_entropy(model(xb), yb), params, allow_unused=True)
        else:
            with torch.no_grad():
                model(xb)

    one(), one()
    t = time.perf_counter()
    one()
    reps = max(3, min(200, int(0.05 / max(time.perf_counter() - t, 1e-6))))
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            one()
        times.append((time.perf_counter() - t) / reps)
    return statistics.median(times)


def measure_model(entry, data, settings, names) -> list[dict]:
    from pgen.measures import evaluate_measure

    model = entry.load_model()
    x, y = data.x.float(), data.y
    bare: dict[tuple[bool, int], float] = {}
    rows = []
    for name in names:
        data.cache.clear()
        with PassCounter() as counter:
            evaluate_measure(name, model, None, data, settings)
        data.cache.clear()
        t = time.perf_counter()
        result = evaluate_measure(name, model, None, data, settings)
        seconds = time.perf_counter() - t
        for key in counter.counts:
            if key not in bare:
                bare[key] = bare_pass_seconds(model, x, y, *key)
        floor = sum(c * bare[k] for k, c in counter.counts.items())
        rows.append({"model": entry.id, "measure": name, "value": result.value, "seconds": seconds,
                     "floor": floor,
                     "epochs_forward": sum(c * b for (g, b), c in counter.counts.items() if not g) / len(x),
                     "epochs_backward": sum(c * b for (g, b), c in counter.counts.items() if g) / len(x),
                     "passes": {f"{'grad' if g else 'no_grad'}:{b}": c for (g, b), c in sorted(counter.counts.items())}})
    return rows


def summarize(rows: list[dict]) -> str:
    out = ["seconds per model (one seed, one thread) against the floor of the passes it runs",
           f"{'zoo':20} {'measure':22} {'models':>6} {'med s':>7} {'max s':>7} {'med floor':>9} "
           f"{'total/floor':>11} {'med ratio':>9} {'max ratio':>9} {'fwd epochs':>10} {'bwd epochs':>10}"]
    keys = sorted({(r["zoo"], r["measure"]) for r in rows}, key=lambda k: (k[0], MEASURES.index(k[1]) if k[1] in MEASURES else 99, k[1]))
    for zoo, name in keys:
        sel = [r for r in rows if r["zoo"] == zoo and r["measure"] == name]
        ratios = [r["seconds"] / r["floor"] for r in sel if r["floor"] > 0]
        out.append(f"{zoo:20} {name:22} {len(sel):6d} {statistics.median(r['seconds'] for r in sel):7.2f} "
                   f"{max(r['seconds'] for r in sel):7.2f} {statistics.median(r['floor'] for r in sel):9.2f} "
                   f"{sum(r['seconds'] for r in sel) / max(sum(r['floor'] for r in sel), 1e-12):11.2f} "
                   f"{statistics.median(ratios) if ratios else float('nan'):9.2f} {max(ratios, default=float('nan')):9.2f} "
                   f"{statistics.median(r['epochs_forward'] for r in sel):10.1f} "
                   f"{statistics.median(r['epochs_backward'] for r in sel):10.1f}")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("zoos", nargs="*", help="zoo folders or names of zoos built with `pgen zoo build`")
    ap.add_argument("--measures", nargs="+", default=list(MEASURES), help="measures to time (default: the five expensive ones)")
    ap.add_argument("--every", type=int, default=1, help="take every K-th final model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=1000, help="training samples given to the measures (pgen score's default)")
    ap.add_argument("--json", type=Path, help="write the measurements here, as they come")
    ap.add_argument("--from-json", type=Path, help="reprint the tables of an earlier --json and exit")
    args = ap.parse_args(argv)
    if args.from_json:
        print(summarize(json.loads(args.from_json.read_text())["rows"]))
        return
    if not args.zoos:
        ap.error("give at least one zoo (or --from-json)")

    from tqdm import tqdm

    from pgen.measures import MeasureData
    from pgen.score import ScoreSettings, _Context, _own_training_data
    from pgen.zoo import load_zoo

    import pgen

    code = str(Path(pgen.__file__).resolve().parent)  # PYTHONPATH=<an older tree> times older code
    print(f"pgen from {code}", flush=True)
    torch.set_num_threads(1)
    rows: list[dict] = []
    for zoo_arg in args.zoos:
        zoo = load_zoo(zoo_arg).final_models()
        s = ScoreSettings(n_samples=args.n)
        ctx = _Context(zoo, s)
        settings = replace(s.measure_settings("cpu"), seed=args.seed)
        for entry in tqdm(zoo.entries[::args.every], desc=f"{zoo_arg}", unit="model"):
            own = _own_training_data(entry, ctx, s)
            data = ctx.measure_data if own is None else MeasureData(
                ctx.x_train[own[0][:args.n]], own[1][:args.n], num_classes=ctx.measure_data.num_classes,
                train_size=len(own[0]), own=True)
            for row in measure_model(entry, data, settings, args.measures):
                rows.append({"zoo": Path(zoo_arg).name, **row})
            if args.json:
                args.json.write_text(json.dumps({"argv": sys.argv[1:] if argv is None else argv, "pgen": code, "rows": rows},
                                                  indent=1))
    print(summarize(rows))


if __name__ == "__main__":
    main()
