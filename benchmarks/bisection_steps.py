"""Where the flatness searches spend their time: every step, and the parts of a sharpness step.

For every K-th final model of a zoo, runs ``sharpness``, ``mag_sharpness``,
``pacbayes_flatness`` and ``pacbayes_mag_flatness`` (one thread, the data ``pgen score``
gives them) and prints each step of their search (:func:`pgen.measures._util.find_scale`)
as ``scale:drop`` and the measure's seconds, so one sees how many steps land near the 0.1
target (those must read every sample) and how many are far from it (those the settled
early exit and sharpness's witness cut short; their drop is the estimate from the samples
read). With ``--parts`` it also times the two parts of a
``sharpness`` step on each model: the 10-step gradient ascent (forward + backward on 256
samples, ten times) and the accuracy pass over the n samples.

Usage::

    python benchmarks/bisection_steps.py fantastic-mnist5k --every 24
    python benchmarks/bisection_steps.py mnist5k --every 12 --parts
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import pgen.measures.pacbayes as pacbayes
import pgen.measures.sharpness as sharpness
from pgen.measures import MeasureData, evaluate_measure
from pgen.measures._util import find_scale
from pgen.score import ScoreSettings, _Context, _own_training_data
from pgen.train import evaluate
from pgen.zoo import load_zoo

MEASURES = ("sharpness", "mag_sharpness", "pacbayes_flatness", "pacbayes_mag_flatness")


def _median_seconds(fn, repeat: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zoo", help="a zoo folder, or the name of a zoo built with pgen zoo build")
    parser.add_argument("--every", type=int, default=1, help="every K-th final model")
    parser.add_argument("--n", type=int, default=1000, help="samples, as pgen score --n-samples")
    parser.add_argument("--parts", action="store_true", help="also time the parts of a sharpness step")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    steps: list[tuple[float, float]] = []

    def logged(drop, **kwargs):
        def recorded(scale):
            value = drop(scale)
            steps.append((scale, value))
            return value
        return find_scale(recorded, **kwargs)

    sharpness.find_scale = logged  # the measures' own search, with every step written down
    pacbayes.find_scale = logged

    zoo = load_zoo(args.zoo).final_models()
    s = ScoreSettings(n_samples=args.n)
    ctx = _Context(zoo, s)
    settings = s.measure_settings("cpu")
    for entry in zoo.entries[::args.every]:
        model = entry.load_model()
        own = _own_training_data(entry, ctx, s)
        data = ctx.measure_data if own is None else MeasureData(
            ctx.x_train[own[0][:args.n]], own[1][:args.n], num_classes=ctx.measure_data.num_classes,
            train_size=len(own[0]), own=True)
        for name in MEASURES:
            steps.clear()
            data.cache.clear()
            t = time.perf_counter()
            evaluate_measure(name, model, None, data, settings)
            seconds = time.perf_counter() - t
            near = sum(abs(d - 0.1) < 0.05 for _, d in steps)
            print(f"{entry.id} {name:<22} {seconds:6.2f} s {len(steps):>2} steps, {near} within 0.05 of the target: "
                  + " ".join(f"{a:.3g}:{d:.2f}" for a, d in steps), flush=True)
        if args.parts:
            x, y = data.x[:sharpness.ATTACK_SAMPLES].float(), data.y[:sharpness.ATTACK_SAMPLES]

            def ascent_step():
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()

            ascent = sharpness.STEPS * _median_seconds(ascent_step)
            accuracy = _median_seconds(lambda: evaluate(model, data.x, data.y, batch_size=settings.batch_size))
            print(f"{entry.id} sharpness step: ascent {ascent:.3f} s + accuracy {accuracy:.3f} s "
                  f"(ascent {ascent / (ascent + accuracy):.0%})", flush=True)


if __name__ == "__main__":
    main()
