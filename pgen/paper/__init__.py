"""``pgen paper``: the experiments of Liu et al. 2022 on embedded data, claim by claim.

Stages, one way: :mod:`pgen.paper.experiments` trains the runs and collects P-vectors and
spectra (one file per finished run under ``runs/``, so an interrupted study resumes);
:func:`run_paper` merges them into ``pvectors.npz`` and the checkpoint / spectrum tables;
:mod:`pgen.paper.claims` computes every claim from those files alone;
:mod:`pgen.paper.figures` draws them; the claims table is written as ``claims.csv`` and
``claims.md`` / ``claims.html``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from pgen.errors import InputError
from pgen.paper.claims import TABLE_FILES, ClaimInputs, compute_claims, judge_claims
from pgen.paper.experiments import PARADIGMS, PaperSettings, data_vectors, load_data, load_run, run_experiment, save_run
from pgen.paths import output_path, replace_link

__all__ = ["PaperSettings", "QUICK", "run_paper", "load_study", "claims_from_folder", "claims_from_tables", "rejudge"]

# --quick: small enough for the tests, the same code path
QUICK = {"seeds": 2, "epochs": 3, "samples": 200, "train_samples": 1000, "bootstrap": 10, "width": 64, "code": 16}


def run_paper(out_dir: str | Path, settings: PaperSettings | None = None, *, progress: bool = True) -> dict:
    """Run (or resume) the study and write every output into ``out_dir``.

    Returns ``{"claims": DataFrame, "tables": {file: DataFrame}, "files": [paths]}``.

    Parameters
    ----------
    out_dir : str or Path
        The study folder (a rerun resumes from ``out_dir/runs/``).
    settings : PaperSettings, optional
        The study's settings (default: the full study).
    progress : bool, default=True
        Show progress bars.

    Returns
    -------
    dict
        ``{"claims": DataFrame, "tables": {file: DataFrame}, "files": [paths]}``.
    """
    s = settings or PaperSettings()
    if s.seeds < 1 or s.epochs < 1:
        raise InputError(f"--seeds and --epochs must be at least 1; got {s.seeds} and {s.epochs}")
    unknown = set(s.paradigms) - set(PARADIGMS)
    if unknown:
        raise InputError(f"unknown paradigm(s) {sorted(unknown)}; known: {', '.join(PARADIGMS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / "runs"
    settings_file = out / "settings.json"
    if settings_file.exists() and any(runs_dir.glob("*.npz")):
        before, now = json.loads(settings_file.read_text()), s.to_json()
        # a setting added since (absent before) counts as unchanged when it has its null default
        changed = sorted(k for k in now if before.get(k) != now[k])
        if changed:
            raise InputError(f"{out}: holds runs made with other settings ({', '.join(changed)}); "
                             "use another --out or delete its runs/ folder")
    replace_link(settings_file).write_text(json.dumps(s.to_json(), indent=2))

    data = load_data(s)
    s = replace(s, samples=len(data["probe_test"]))
    jobs = [(p, seed) for seed in range(s.seeds) for p in s.paradigms]
    iterator = jobs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(jobs, desc="paper", unit="run")
    for paradigm, seed in iterator:
        if (runs_dir / f"{paradigm}-seed{seed}.npz").exists():
            continue  # finished in an earlier call
        save_run(runs_dir, run_experiment(paradigm, seed, s, data))

    vectors, spectra = data_vectors(data)
    checkpoints, bootstrap = [], []
    for paradigm, seed in jobs:
        r = load_run(runs_dir / f"{paradigm}-seed{seed}.npz")
        vectors.update(r.vectors)
        spectra += r.spectra
        checkpoints += r.checkpoints
        bootstrap += r.bootstrap
    np.savez_compressed(output_path(out, "pvectors.npz"), **vectors)
    pd.DataFrame(checkpoints).to_csv(output_path(out, "checkpoints.csv"), index=False)
    pd.DataFrame(spectra).to_csv(output_path(out, "spectra.csv"), index=False)
    pd.DataFrame(bootstrap).to_csv(output_path(out, "bootstrap.csv"), index=False)
    return write_outputs(out, s)


def load_study(out_dir: str | Path) -> ClaimInputs:
    """The saved study of a ``pgen paper`` folder, read back from its files only.

    Parameters
    ----------
    out_dir : str or Path
        A ``pgen paper`` folder.

    Returns
    -------
    ClaimInputs
        The runs' P-vectors and records, as :func:`pgen.paper.claims.compute_claims` reads them.
    """
    out = Path(out_dir)
    with np.load(out / "pvectors.npz", allow_pickle=False) as z:
        vectors = {k: z[k] for k in z.files}
    boot = out / "bootstrap.csv"
    bootstrap = pd.read_csv(boot) if boot.exists() and boot.stat().st_size > 1 else pd.DataFrame()
    return ClaimInputs(vectors, pd.read_csv(out / "checkpoints.csv"), pd.read_csv(out / "spectra.csv"), bootstrap,
                       json.loads((out / "settings.json").read_text()))


def claims_from_folder(out_dir: str | Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Recompute the claims table and the per-claim tables from a study folder's files.

    Parameters
    ----------
    out_dir : str or Path
        A study folder with ``pvectors.npz``.

    Returns
    -------
    tuple
        ``(claims DataFrame, {file name: per-claim DataFrame})``.
    """
    return compute_claims(load_study(out_dir))


def claims_from_tables(out_dir: str | Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The claims table judged from a study folder's per-claim CSVs alone (no ``pvectors.npz``):
    what a committed study folder holds.

    Parameters
    ----------
    out_dir : str or Path
        A study folder with its per-claim CSVs.

    Returns
    -------
    tuple
        ``(claims DataFrame, {file name: per-claim DataFrame})``.
    """
    out = Path(out_dir)
    missing = [f for f in (*TABLE_FILES, "checkpoints.csv", "settings.json") if not (out / f).is_file()]
    if missing:
        raise InputError(f"{out}: not a `pgen paper` folder with its tables; missing {', '.join(missing)}")
    tables = {f: pd.read_csv(out / f) for f in TABLE_FILES}
    boot = out / "bootstrap.csv"
    bootstrap = pd.read_csv(boot) if boot.is_file() and boot.stat().st_size > 1 else pd.DataFrame()
    spectra = pd.read_csv(out / "spectra.csv") if (out / "spectra.csv").is_file() else None
    final = pd.read_csv(out / "checkpoints.csv").groupby("run")["step"].max().to_dict()
    return judge_claims(tables, bootstrap=bootstrap, spectra=spectra, final=final), tables


def rejudge(out_dir: str | Path) -> dict:
    """Redo the claims, figures and report of a study folder from its tables alone (after the
    verdict rules changed, say); the tables themselves are left as they are.

    Parameters
    ----------
    out_dir : str or Path
        A study folder.

    Returns
    -------
    dict
        As :func:`run_paper`.
    """
    out = Path(out_dir)
    s = PaperSettings(**{k: tuple(v) if k == "paradigms" else v
                         for k, v in json.loads((out / "settings.json").read_text()).items()})
    claims, tables = claims_from_tables(out)
    return _write(out, s, claims, tables, tables_too=False)


def write_outputs(out: Path, s: PaperSettings) -> dict:
    claims, tables = claims_from_folder(out)
    return _write(out, s, claims, tables, tables_too=True)


def _write(out: Path, s: PaperSettings, claims: pd.DataFrame, tables: dict, *, tables_too: bool) -> dict:
    from pgen.paper.figures import write_figures
    from pgen.stats import random_angle_null

    null = {"n": s.samples, **random_angle_null(s.samples)}
    files = []
    for name, table in tables.items():
        if tables_too:
            table.to_csv(output_path(out, name), index=False)
            files.append(out / name)
    claims.to_csv(output_path(out, "claims.csv"), index=False)
    output_path(out, "null.json").write_text(json.dumps(null, indent=2))
    figs = write_figures(out, tables, null)
    files += [out / "claims.csv", out / "null.json", *figs.values()]
    files += _report(out, s, claims, figs, null)
    return {"claims": claims, "tables": tables, "files": files}


def _report(out: Path, s: PaperSettings, claims: pd.DataFrame, figs: dict, null: dict) -> list[Path]:
    from pgen.report.document import Document
    from pgen.report.glossary import add_glossary

    doc = Document(f"Liu et al. 2022, reproduced on {s.dataset}")
    paper_claims = claims[claims["claim"].str.startswith("C")]
    tally = {tag: paper_claims[f"{tag}_verdict"].value_counts().to_dict() for tag in ("centered", "uncentered")}
    doc.paragraph(
        f"{len(s.paradigms)} paradigms x {s.seeds} seeds, {s.epochs} epochs each. Of the ten claims, centered: "
        + ", ".join(f"{k} {v}" for k, v in sorted(tally["centered"].items()))
        + "; uncentered: " + ", ".join(f"{k} {v}" for k, v in sorted(tally["uncentered"].items()))
        + ". Intervals are 95% t-intervals over training runs (over seeds for pairs of one seed); a correlation's "
        "interval is taken on Fisher's z, so it stays inside [-1, 1]. "
        f"The scale of an angle over {null['n']} samples: random unit vectors sit at {null['median']:.1f}° from any "
        "fixed one "
        f"(90% between {null['q05']:.1f}° and {null['q95']:.1f}°; mean |cos| {null['mean_abs_cos']:.4f}, "
        f"closed form sqrt(2/(pi n)) = {null['mean_abs_cos_closed_form']:.4f}).", answer=True)
    doc.heading("Claims")
    view = claims[["claim", "paper", "centered_measured", "centered_verdict", "uncentered_measured",
                   "uncentered_verdict"]]
    doc.table(view)
    doc.heading("Rules")
    doc.bullets([f"{r['claim'].split(' ', 1)[0]}: {r['rule']} (raw numbers: `{r['file']}`)"
                 for _, r in claims.iterrows()])
    doc.heading("Settings")
    doc.key_values({
        "dataset": s.dataset,
        "training set": "the whole training split" if s.train_samples is None
                        else f"the first {s.train_samples} samples of the training split",
        "samples": f"the first {s.samples} of the test split (model-to-model angles) and of the training split "
                   "(model-to-data angles), the same in the same order for every P-vector",
        "feature layer": "classifiers: the penultimate ReLU output; autoencoder: the bottleneck code; contrastive: "
                         "the encoder output (before the projection head)",
        "models": f"mlp: 3 x {s.width} ReLU; cnn: conv 16-32 (3x3, max-pool) + {s.width} ReLU; autoencoder: "
                  f"{s.width}-{s.code}-{s.width} MLP, MSE; contrastive: {s.width}-{s.width} MLP encoder + "
                  f"{s.width}-{s.code} head, NT-Xent (temperature {s.temperature:g}) on two views from pgen's "
                  "augmentation policy",
        "optimizer": f"classifiers SGD lr {s.classifier_lr:g} momentum 0.9; autoencoder and contrastive Adam lr "
                     f"{s.unsupervised_lr:g}; batch {s.batch_size}; no augmentation for the classifiers "
                     "(the paper used its default random augmentation, A.4)",
        "checkpoints": "initial weights, every iteration of epoch 1, the end of every later epoch",
        "reference (well-trained) model": f"each run's last epoch ({s.epochs}); the paper used epoch 200",
        "centering": "every claim under both readings (columns centered / uncentered)",
        "device": s.device,
        "P-vectors": "pvectors.npz, key 'run|s<step>|<layer>|<test or train samples>|<centering>', rows = top-k "
                     "left singular vectors (row 0 the P-vector); data P-vectors under 'data|s0|input|...'",
    })
    doc.heading("Figures")
    doc.images([(f"{k}: {p.stem}", p) for k, p in figs.items()])
    add_glossary(doc, ["P-vector", "angle", "centered", "relative spectral gap", "Kendall tau"])
    return doc.write(out, "claims")
