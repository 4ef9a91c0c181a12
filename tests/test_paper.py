"""`pgen paper`: the study end to end at --quick size, its numbers re-derived with numpy
from the saved P-vectors, the random-vector null against its closed form, resume."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from pgen.cli import main
from pgen.errors import InputError
from pgen.paper import QUICK, PaperSettings, claims_from_folder, run_paper
from pgen.paper.claims import t_interval
from pgen.stats import random_angle_null

# smaller than --quick so the module stays a few seconds; the same code path
TINY = dict(QUICK, epochs=2, samples=120, bootstrap=4)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper") / "digits"
    assert main(["paper", "--quick", "--dataset", "digits", "--epochs", "2", "--samples", "120", "--bootstrap", "4",
                 "--out", str(out)]) == 0
    return out


def _np_angle(u, v):
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return math.degrees(math.acos(min(1.0, abs(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v)))))


def test_every_claim_has_a_row_a_verdict_a_figure_and_a_csv(study):
    claims = pd.read_csv(study / "claims.csv")
    assert [c.split(" ")[0] for c in claims["claim"]] == [f"C{i}" for i in range(1, 11)] + ["S"]
    allowed = {"holds", "partly", "does not hold", "not resolved", "does not hold (opposite sign)"}
    for tag in ("centered", "uncentered"):
        verdicts = claims[f"{tag}_verdict"].fillna("")
        for claim, v in zip(claims["claim"], verdicts):
            assert v in allowed or v.startswith("measured:") or claim.startswith("S"), (claim, v)
        assert claims[f"{tag}_measured"].str.len().gt(10).all()
    for f in claims["file"]:
        assert len(pd.read_csv(study / f)) > 0, f
    figs = sorted(p.name for p in study.glob("fig*.png"))
    assert figs == sorted(["fig11_common_subspace.png", "fig12_training_dynamics.png", "fig13_first_epoch.png",
                           "fig14_cross_paradigm.png", "fig15_model_to_data.png", "fig16_layers.png",
                           "fig17_entry_distribution.png", "fig19_other_singular_vectors.png", "fig20_log_log.png",
                           "fig22_explained_variance.png"])
    md = (study / "claims.md").read_text()
    assert "random unit vectors" in md and "no augmentation for the classifiers" in md
    assert "data:image/png;base64," in (study / "claims.html").read_text()


def test_checkpoints_cover_every_iteration_of_epoch_one(study):
    c = pd.read_csv(study / "checkpoints.csv")
    per_epoch = math.ceil(1000 / 128)  # --quick trains on the first 1000 training samples, batch 128
    run = c[c["run"] == "mlp-seed0"].sort_values("step")
    assert list(run["step"]) == list(range(per_epoch + 1)) + [2 * per_epoch]
    assert set(c["run"]) == {f"{p}-seed{s}" for p in ("mlp", "cnn", "autoencoder", "contrastive") for s in (0, 1)}


def test_angles_in_the_csvs_are_recomputed_from_pvectors_npz(study):
    """Independent numpy: arccos |<u, v>| of the stored float32 vectors."""
    z = np.load(study / "pvectors.npz")
    final = pd.read_csv(study / "checkpoints.csv").groupby("run")["step"].max()
    c1 = pd.read_csv(study / "c1_common_subspace.csv")
    for _, r in c1.iterrows():
        a = z[f"{r['model_a']}|s{final[r['model_a']]}|feature|test|{r['centering']}"][0]
        b = z[f"{r['model_b']}|s{final[r['model_b']]}|feature|test|{r['centering']}"][0]
        assert _np_angle(a, b) == pytest.approx(r["angle_trained"], abs=1e-6)
    c5 = pd.read_csv(study / "c5_model_to_data.csv").sample(20, random_state=0)
    for _, r in c5.iterrows():
        u = z[f"{r['run']}|s{r['step']}|feature|train|{r['centering']}"][0]
        d = z[f"data|s0|input|train|{r['centering']}"][0]
        assert _np_angle(u, d) == pytest.approx(r["angle_to_data"], abs=1e-6)
    c8 = pd.read_csv(study / "c8_other_singular_vectors.csv")
    r = c8[c8["k"] == 3].iloc[0]
    a = z[f"{r['model_a']}|s{final[r['model_a']]}|feature|test|{r['centering']}"][2]
    b = z[f"{r['model_b']}|s{final[r['model_b']]}|feature|test|{r['centering']}"][2]
    assert _np_angle(a, b) == pytest.approx(r["angle"], abs=1e-6)
    # and the claims table recomputed from the folder's files equals the written one
    again, _ = claims_from_folder(study)
    written = pd.read_csv(study / "claims.csv").fillna("")
    assert list(again["centered_measured"]) == list(written["centered_measured"])


def test_stored_vectors_are_the_pvectors_of_the_features(study):
    """The data P-vector in the file equals pgen.p_vector and float64 numpy SVD of the same samples."""
    from pgen.data import dataset_arrays, load_dataset
    from pgen.pvector import p_vector

    x, _ = dataset_arrays(load_dataset("digits", "train"))
    x = x[:120].reshape(120, -1).numpy().astype(np.float64)
    z = np.load(study / "pvectors.npz")
    for tag, centered in (("centered", True), ("uncentered", False)):
        xc = x - x.mean(0) if centered else x
        u = np.linalg.svd(xc, full_matrices=False)[0]
        stored = z[f"data|s0|input|train|{tag}"]
        for k in range(5):
            assert _np_angle(stored[k], u[:, k]) < 1e-3
        assert _np_angle(stored[0], p_vector(x, center=centered)) < 1e-3


def test_spectra_give_explained_variance_and_reconstruction_error(study):
    s = pd.read_csv(study / "spectra.csv")
    row = s[(s["run"] == "data") & (s["samples"] == "train") & (s["centering"] == "centered")].iloc[0]
    from pgen.data import dataset_arrays, load_dataset

    x, _ = dataset_arrays(load_dataset("digits", "train"))
    x = x[:120].reshape(120, -1).numpy().astype(np.float64)
    x = x - x.mean(0)
    u, sv, vt = np.linalg.svd(x, full_matrices=False)
    e1 = np.linalg.norm(x - sv[0] * np.outer(u[:, 0], vt[0])) ** 2
    assert row["total_energy"] - row["s1"] ** 2 == pytest.approx(e1, rel=1e-9)


def test_random_null_matches_its_closed_form():
    for n in (200, 2000):
        null = random_angle_null(n, draws=4000)
        assert null["mean_abs_cos"] == pytest.approx(math.sqrt(2 / (math.pi * n)), rel=0.05)
        assert null["mean_abs_cos_closed_form"] == math.sqrt(2 / (math.pi * n))
        assert 85 < null["median"] < 90


def test_t_interval_matches_scipy():
    v = [3.0, 5.0, 4.5, 8.0]
    m, lo, hi, n = t_interval(v)
    ref = sps.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=sps.sem(v))
    assert (lo, hi) == pytest.approx(ref) and n == 4 and m == pytest.approx(5.125)
    assert math.isnan(t_interval([1.0])[1])


def test_resume_trains_nothing_twice_and_refuses_other_settings(study, monkeypatch, tmp_path):
    import shutil

    import pgen.paper as paper

    out = tmp_path / "again"
    shutil.copytree(study, out)
    monkeypatch.setattr(paper, "run_experiment", lambda *a, **k: pytest.fail("a finished run was retrained"))
    s = PaperSettings(dataset="digits", **TINY)
    res = run_paper(out, s, progress=False)
    assert list(res["claims"]["centered_verdict"].fillna("")) == list(
        pd.read_csv(study / "claims.csv")["centered_verdict"].fillna(""))
    with pytest.raises(InputError, match="other settings.*epochs"):
        run_paper(out, PaperSettings(dataset="digits", **dict(TINY, epochs=3)), progress=False)


def test_cli_refuses_a_device_it_cannot_use(tmp_path, capsys):
    assert main(["paper", "--quick", "--device", "nonsense", "--out", str(tmp_path / "x")]) != 0
    assert "nonsense" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_every_paradigm_runs_on_colour_images_at_tiny_size():
    """The CIFAR path (3 x 32 x 32, 'color' augmentation policy) on CPU, without the dataset:
    the same run_experiment on random images shaped like CIFAR-10."""
    import torch

    from pgen.data import dataset_info
    from pgen.paper.experiments import PARADIGMS, run_experiment

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 3, 32, 32, generator=g), torch.randint(0, 10, (40,), generator=g)
    data = {"info": dataset_info("cifar10"), "x_train": x, "y_train": y, "x_test": x[:20], "y_test": y[:20],
            "probe_test": x[:16], "probe_train": x[:16]}
    s = PaperSettings(dataset="cifar10", epochs=1, batch_size=20, width=16, code=8, bootstrap=2)
    for paradigm in PARADIGMS:
        r = run_experiment(paradigm, 0, s, data)
        steps = sorted({c["step"] for c in r.checkpoints})
        assert steps == [0, 1, 2], paradigm
        u = r.vectors[f"{paradigm}-seed0|s2|feature|test|centered"]
        assert u.shape == (5, 16) and np.isfinite(u).all()


# ----------------------------------------------------------------------------- verdict rules on constructed tables

def _both(rows):
    """The same rows under both centerings."""
    return pd.DataFrame([{**r, "centering": tag} for r in rows for tag in ("centered", "uncentered")])


def _epoch1(curves):
    """c3-style rows: one run per curve, iterations 0..len-1."""
    return _both([{"run": f"r{i}", "paradigm": "mlp", "iteration": it, "angle_to_own_final": a}
                  for i, curve in enumerate(curves) for it, a in enumerate(curve)])


def test_c3_tests_a_signed_rise_and_a_signed_fall():
    from pgen.paper.claims import _c3

    rng = np.random.default_rng(0)
    steps = np.arange(33)  # init + 32 iterations; the first quarter is iterations 1..8
    bump = [60 + 10 * np.exp(-((steps - 4) / 3.0) ** 2) - 0.5 * steps + rng.normal(0, 0.3, 33) for _ in range(6)]
    fall = [60 - 0.5 * steps + rng.normal(0, 0.3, 33) for _ in range(6)]
    flat = [60 + rng.normal(0, 0.3, 33) for _ in range(6)]
    assert _c3(_epoch1(bump))["centered_verdict"] == "holds"
    row = _c3(_epoch1(fall))  # falls all along: the rise is negative, resolved, and the claim does not hold
    assert row["centered_verdict"] == "does not hold" and "rise (first quarter of epoch 1 minus init) -" in \
        row["centered_measured"]
    assert _c3(_epoch1(flat))["centered_verdict"] == "does not hold"


def _c2_rows(rhos_per_run, epochs=15):
    """c2-style rows whose per-run Spearman rho over epochs 0..epochs-1 (the last epoch is the
    reference and left out) is set by the order of the angles."""
    rows = []
    for i, order in enumerate(rhos_per_run):
        for e in range(epochs + 1):
            angle = 70.0 if e == 0 else 0.0
            if 0 < e < epochs + 1:
                angle = float(order[e - 1]) if e - 1 < len(order) else 0.0
            rows.append({"run": f"r{i}", "paradigm": "mlp", "epoch": e, "step": e, "angle_to_own_final": angle,
                         "angle_to_other_seed_final": math.nan})
    return _both(rows)


def test_c2_applies_its_threshold_to_the_interval_not_the_point():
    from pgen.paper.claims import _c2

    falling = list(range(60, 60 - 14, -1))  # strictly falling after init: rho = -1 in every run
    assert _c2(_c2_rows([falling] * 6))["centered_verdict"] == "holds"
    # runs whose rho average near -0.85 but spread widely: the interval reaches above -0.8
    rng = np.random.default_rng(1)
    noisy = [list(np.array(falling) + rng.normal(0, s, 14)) for s in (0.5, 3, 6, 1, 5, 8)]
    row = _c2(_c2_rows(noisy))
    lo_hi = row["centered_measured"].split("Spearman rho(epoch, angle) ")[1]
    mean, interval = lo_hi.split(" [")
    hi = float(interval.rstrip("]").split(", ")[1])
    assert hi > -0.8 and row["centered_verdict"] == "partly"  # init above 45 holds, the fall's interval does not


def test_correlation_intervals_stay_in_range_with_positive_width():
    from pgen.paper.claims import correlation_interval

    mean, lo, hi, n = correlation_interval([1.0, 1.0, 1.0], [3, 3, 3])  # three runs agreeing over 3 points
    assert -1 <= lo < hi <= 1 and n == 3
    mean, lo, hi, _ = correlation_interval([0.9, 0.95, 0.99, 0.97], [15] * 4)
    assert -1 <= lo < mean < hi <= 1
    # many points per run: the between-run spread dominates, as a plain Fisher-z t-interval
    r = np.array([0.2, 0.5, 0.4, 0.35, 0.3])
    z = np.arctanh(r)
    h = sps.t.ppf(0.975, 4) * z.std(ddof=1) / math.sqrt(5)
    assert correlation_interval(r, [1000] * 5, "pearson")[1:3] == pytest.approx((np.tanh(z.mean() - h),
                                                                                 np.tanh(z.mean() + h)))


def test_c6_intervals_are_correlations():
    from pgen.paper.claims import _c6

    rows = [{"run": f"r{i}", "paradigm": "cnn", "epoch": e, "step": e, "depth": d, "layer": str(d),
             "angle_to_data": 10.0 * d if e == 1 else 50.0 - 10 * d} for i in range(6) for e in (1, 15)
            for d in (1, 2, 3)]
    row = _c6(_both(rows))
    for part in row["centered_measured"].split("; "):
        lo, hi = (float(v) for v in part.split("[")[1].split("]")[0].split(", "))
        assert -1 <= lo < hi <= 1


def test_c8_does_not_hold_when_the_p_vector_itself_does_not_converge():
    from pgen.paper.claims import _c8

    def rows(k1):
        return _both([{"seed": s, "model_a": "a", "model_b": "b", "k": k, "angle": (k1 if k == 1 else 60.0) + s}
                      for s in range(3) for k in range(1, 6)])

    assert _c8(rows(3.0))["centered_verdict"] == "holds"
    row = _c8(rows(30.0))
    assert row["centered_verdict"] == "does not hold" and "no contrast" in row["centered_measured"]


def test_c5_reports_the_signed_change_after_epoch_one():
    from pgen.paper.claims import _c5

    rows = []
    for i in range(4):
        for step in range(9):  # epoch 1: 8 iterations, flat
            rows.append({"run": f"r{i}", "paradigm": "mlp", "step": step, "epoch": 1 if step else 0,
                         "in_epoch1": True, "is_epoch_end": step == 8, "angle_to_data": 40.0 + 0.01 * i})
        for e in range(2, 8):  # later epochs: the angle rises by 2 degrees an epoch
            rows.append({"run": f"r{i}", "paradigm": "mlp", "step": 8 * e, "epoch": e, "in_epoch1": False,
                         "is_epoch_end": True, "angle_to_data": 40.0 + 2 * (e - 1) + 0.3 * i})
    row = _c5(_both(rows))
    assert "change from epoch 1 to the end 12." in row["centered_measured"]
    assert row["centered_verdict"] == "does not hold"


def test_claims_from_the_committed_tables_alone(study, tmp_path):
    """The verdicts come from the per-claim CSVs alone: the same claims table without pvectors.npz."""
    import shutil

    from pgen.paper import claims_from_tables

    copy = tmp_path / "copy"
    shutil.copytree(study, copy)
    (copy / "pvectors.npz").unlink()
    shutil.rmtree(copy / "runs")
    claims, _ = claims_from_tables(copy)
    pd.testing.assert_frame_equal(claims, pd.read_csv(study / "claims.csv").fillna(""), check_dtype=False)
    assert main(["paper", "--from-tables", "--out", str(copy)]) == 0
