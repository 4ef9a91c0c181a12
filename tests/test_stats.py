"""Statistics against scipy / statsmodels, and the PGDL CMI against the competition's published values."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.stats
import statsmodels.api as sm

from pgen.stats import (StatsError, conditional_mutual_information, correlations, granulated_kendall,
                        kendall_tau, loglog_fit)

KIT_TOY = Path(__file__).parent / "fixtures" / "pgdl" / "kit_toy"


def test_correlations_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.random(40)
    y = x + 0.3 * rng.random(40)
    c = correlations(x, y, n_boot=200).set_index("method")
    for m, fn in (("pearson", scipy.stats.pearsonr), ("spearman", scipy.stats.spearmanr), ("kendall", scipy.stats.kendalltau)):
        ref = fn(x, y)
        assert c.loc[m, "value"] == pytest.approx(ref[0], rel=1e-12)
        assert c.loc[m, "p_value"] == pytest.approx(ref[1], rel=1e-9)
        assert c.loc[m, "ci_low"] <= c.loc[m, "value"] <= c.loc[m, "ci_high"]


def test_loglog_fit_matches_statsmodels_hc3():
    rng = np.random.default_rng(1)
    x = rng.uniform(1, 80, 30)
    y = 2.0 * x**-0.4 * np.exp(0.05 * rng.standard_normal(30))
    fit = loglog_fit(x, y)
    ref = sm.OLS(np.log(y), sm.add_constant(np.log(x))).fit(cov_type="HC3")
    assert fit.slope == pytest.approx(ref.params[1])
    assert fit.intercept == pytest.approx(ref.params[0])
    assert fit.r2 == pytest.approx(ref.rsquared)
    np.testing.assert_allclose(fit.slope_ci, ref.conf_int()[1])
    assert fit.slope == pytest.approx(-0.4, abs=0.05)


def test_kendall_and_granulated_kendall_by_hand():
    # 2 x 2 grid: models a..d; hparams p in {0,1}, q in {0,1}
    hp = {"a": {"p": 0, "q": 0}, "b": {"p": 1, "q": 0}, "c": {"p": 0, "q": 1}, "d": {"p": 1, "q": 1}}
    score = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 3.0}
    gap = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    res = granulated_kendall(score, hp, gap)
    # psi_p: groups q=0 {a,b}: concordant (+1); q=1 {c,d}: discordant (-1) -> 0
    # psi_q: groups p=0 {a,c}: +1; p=1 {b,d}: +1 -> 1
    assert res["per_hparam"] == {"p": 0.0, "q": 1.0}
    assert res["psi"] == 0.5
    assert kendall_tau(list(score.values()), list(gap.values())) == pytest.approx(scipy.stats.kendalltau([1, 2, 4, 3], [1, 2, 3, 4])[0])


@pytest.mark.parametrize("x, y, msg", [
    ([1, 2], [1, 2], "at least 3"),
    ([1, 1, 1, 1], [1, 2, 3, 4], "constant"),
    ([1, 2, 3], [1, 2, 3, 4], "same length"),
])
def test_stats_errors(x, y, msg):
    with pytest.raises(StatsError, match=msg):
        correlations(x, y)


def test_loglog_needs_positive_values():
    with pytest.raises(StatsError, match="positive"):
        loglog_fit([1, 2, 3, 4], [0.1, -0.2, 0.3, 0.4])


def hdf5_arrays(path):
    out = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.append(np.array(obj, dtype=np.float64)) if isinstance(obj, h5py.Dataset) else None)
    return out


def kit_scores():
    ssw, dist = {}, {}
    for d in sorted(p for p in KIT_TOY.iterdir() if p.is_dir() and p.name.startswith("model_")):
        w, w0 = hdf5_arrays(d / "weights.hdf5"), hdf5_arrays(d / "weights_init.hdf5")
        ssw[d.name] = sum(float(np.sum(a**2)) for a in w)
        dist[d.name] = sum(float(np.sum((a - b) ** 2)) for a, b in zip(w, w0))
    return ssw, dist


def test_cmi_reproduces_the_competition_values():
    configs = json.loads((KIT_TOY / "model_configs.json").read_text())
    ssw, dist = kit_scores()
    assert conditional_mutual_information(ssw, configs) == pytest.approx(0.10070132390915873, abs=1e-9)
    assert conditional_mutual_information(dist, configs) == pytest.approx(0.11900511812160217, abs=1e-9)


def test_cmi_properties():
    configs = json.loads((KIT_TOY / "model_configs.json").read_text())
    ssw, _ = kit_scores()
    base, table = conditional_mutual_information(ssw, configs, details=True)
    # invariant to flipping the measure's sign; ordered pairs of 3 hparams -> 6 rows
    assert conditional_mutual_information({k: -v for k, v in ssw.items()}, configs) == pytest.approx(base, abs=1e-12)
    assert len(table) == 6 and table["score"].min() == base
    # ids with or without the model_ prefix
    assert conditional_mutual_information({k.replace("model_", ""): v for k, v in ssw.items()}, configs) == base
    # a perfect predictor of the gap scores 1
    gaps = {f"model_{k}" if not k.startswith("model_") else k: c["metrics"]["train_acc"] - c["metrics"]["test_acc"]
            for k, c in configs.items()}
    assert conditional_mutual_information(gaps, configs) == pytest.approx(1.0, abs=1e-6)
    assert 0 <= base <= 1


def test_cmi_incomplete_grid_is_an_error():
    configs = json.loads((KIT_TOY / "model_configs.json").read_text())
    ssw, _ = kit_scores()
    del configs[next(iter(configs))]
    with pytest.raises(StatsError, match="incomplete hparam grid"):
        conditional_mutual_information(ssw, configs)
