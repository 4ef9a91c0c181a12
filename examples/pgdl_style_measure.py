"""A PGDL-competition-style submission run as a pgen measure: `complexity(model, dataset)`
registered with `pgen.measures.adapters.register_complexity`, checked against the measure
contract, computed on the committed digits zoo and ranked like every other measure.

    python examples/pgdl_style_measure.py        # ~20 s on 2 cores; run by tests/test_own_measure.py
"""

from pathlib import Path

import torch

from pgen.measures._contract import check_measure
from pgen.measures.adapters import register_complexity
from pgen.score import ScoreSettings, score_zoo
from pgen.stats import measure_statistics


def complexity(model, dataset):
    """The kit's format: a model and batches of (x, y); larger predicts a larger gap."""
    norms = []
    with torch.no_grad():
        for x, _ in dataset.batch(100):
            norms.append(model(x).norm(dim=1))  # the size of the logits on the training samples
    return float(torch.cat(norms).mean())


register_complexity(complexity, name="logit_norm_submission",
                    reference="examples/pgdl_style_measure.py (an illustration)")

failed = [v for v in check_measure("logit_norm_submission") if not v.passed]
print(f"contract: {'every check passed' if not failed else [v.line() for v in failed]}")

zoo = Path(__file__).resolve().parent.parent / "model_zoos" / "digits"
run = score_zoo(zoo, "pgdl-style-example", settings=ScoreSettings(n_samples=500, measures=("logit_norm_submission",)),
                progress=False)
st = measure_statistics(run.table, "logit_norm_submission", n_boot=200)
print(f"{len(run.table)} models; Kendall tau with test accuracy {st.kendall['test_acc']:+.2f}, "
      f"with the gap {st.kendall['gap']:+.2f}")
