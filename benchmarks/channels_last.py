"""Benchmark: channels-last against channels-first forward passes on a CPU (#37 item 1).

The PAC-Bayes draws run a channels-last copy of the model
(:func:`pgen.measures._util.channels_last_on_cpu`). This script shows why, in one process
with one thread: a 2x2 max pooling of 256x16x28x28 activations in both layouts, then for
every ``--every``-th final model of a zoo a forward pass of 256 samples (no gradients) and
a forward+backward pass (cross-entropy, gradients of the parameters), of the model as
stored and of its channels-last copy, median of ``--repeat`` rounds, printed with their
ratios and the largest difference of the logits; then what ``pgen score --measures
pvector_angle`` spends on each of those models (its targets' passes over the training,
test and pseudo-test splits and the angle; ``pgen.score._score_one``) with the layout as
stored and with channels-last, the two alternating, median of ``--repeat``, and the
largest difference of the angle and the accuracies between the two.

Usage::

    python benchmarks/channels_last.py mnist5k --every 4
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def seconds(fn, repeat: int) -> float:
    fn(), fn()
    rounds = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(5):
            fn()
        rounds.append((time.perf_counter() - t) / 5)
    return statistics.median(rounds)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("zoo", help="a zoo folder or the name of a zoo built with `pgen zoo build`")
    ap.add_argument("--every", type=int, default=4, help="take every K-th final model")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    from pgen.measures._util import channels_last_on_cpu
    from pgen.score import ScoreSettings, _Context
    from pgen.zoo import load_zoo

    torch.set_num_threads(1)
    a = torch.randn(256, 16, 28, 28)
    pool = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        act = a.contiguous(memory_format=fmt)
        with torch.no_grad():
            pool[fmt] = seconds(lambda act=act: torch.nn.functional.max_pool2d(act, 2), args.repeat)
    print(f"2x2 max pooling of 256x16x28x28: channels-first {pool[torch.contiguous_format] * 1e3:.1f} ms, "
          f"channels-last {pool[torch.channels_last] * 1e3:.1f} ms, "
          f"ratio {pool[torch.contiguous_format] / pool[torch.channels_last]:.2f}")

    zoo = load_zoo(args.zoo).final_models()
    ctx = _Context(zoo, ScoreSettings(n_samples=args.batch))
    x, y = ctx.measure_data.x[:args.batch].float(), ctx.measure_data.y[:args.batch]
    print(f"{'model':<22} {'fwd first':>10} {'fwd last':>9} {'ratio':>6} {'f+b first':>10} {'f+b last':>9} "
          f"{'ratio':>6} {'max |dlogit|':>12}")
    for entry in zoo.entries[::args.every]:
        model = entry.load_model().eval()
        fast = copy.deepcopy(model)
        channels_last_on_cpu(fast, x[:2])
        row = {}
        for label, m in (("first", model), ("last", fast)):
            params = [p for p in m.parameters() if p.requires_grad]

            def forward(m=m):
                with torch.no_grad():
                    m(x)

            def backward(m=m, params=params):
                torch.autograd.grad(torch.nn.functional.cross_entropy(m(x), y), params, allow_unused=True)

            row[label] = (seconds(forward, args.repeat), seconds(backward, args.repeat))
        with torch.no_grad():
            diff = float((model(x) - fast(x)).abs().max())
        (f1, b1), (f2, b2) = row["first"], row["last"]
        print(f"{entry.id:<22} {f1 * 1e3:8.1f}ms {f2 * 1e3:7.1f}ms {f1 / f2:6.2f} {b1 * 1e3:8.1f}ms "
              f"{b2 * 1e3:7.1f}ms {b1 / b2:6.2f} {diff:12.1e}", flush=True)

    import pgen.score as score

    settings = ScoreSettings(measures=("pvector_angle",))
    ctx = _Context(zoo, settings)
    layouts = {"stored": lambda model, example: (lambda: None), "channels-last": channels_last_on_cpu}
    print(f"\npgen score --measures pvector_angle, seconds per model (targets + angle)\n"
          f"{'model':<22} {'stored':>8} {'ch-last':>8} {'ratio':>6} {'max |d angle|':>14} {'max |d acc|':>12}")
    totals = dict.fromkeys(layouts, 0.0)
    for entry in zoo.entries[::args.every]:
        times, outcomes = {k: [] for k in layouts}, {}
        for _ in range(args.repeat):
            for label, layout in layouts.items():
                score.channels_last_on_cpu = layout
                t = time.perf_counter()
                outcomes[label] = score._score_one(zoo, entry.id, ctx, settings, "cpu", True, settings.measures)
                times[label].append(time.perf_counter() - t)
        score.channels_last_on_cpu = channels_last_on_cpu
        a, b = outcomes["stored"], outcomes["channels-last"]
        d_angle = abs(a.measures["pvector_angle"][0] - b.measures["pvector_angle"][0])
        d_acc = max(abs(a.targets[k] - b.targets[k]) for k in a.targets if k.endswith("_acc"))
        t1, t2 = statistics.median(times["stored"]), statistics.median(times["channels-last"])
        totals["stored"] += t1
        totals["channels-last"] += t2
        print(f"{entry.id:<22} {t1:8.3f} {t2:8.3f} {t1 / t2:6.2f} {d_angle:14.1e} {d_acc:12.1e}", flush=True)
    print(f"{'all':<22} {totals['stored']:8.2f} {totals['channels-last']:8.2f} "
          f"{totals['stored'] / totals['channels-last']:6.2f}")


if __name__ == "__main__":
    main()
