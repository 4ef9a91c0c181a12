"""The ``pgen`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

__all__ = ["main"]

MAX_RESAMPLES = 1_000_000  # pgen.stats.resampling.MAX_RESAMPLES (kept here so that --help imports no numpy)
MAX_SEED = 2**32 - 1  # pgen.score.MAX_SEED
DATA_KIND_HELP = "pseudo-test policy: grayscale-digits, grayscale, color, color-digits, signal-1d, vector, unknown (default: the dataset's; for data of no known kind, unknown: no flips)"


def _integer(minimum: int, maximum: int | None = None, *, zero_means: str | None = None):
    """An argparse type: an integer >= ``minimum`` (or 0 where ``zero_means`` says what 0 is)
    and at most ``maximum``, so that a negative count is refused instead of slicing from the
    end, and a huge one instead of filling memory."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value == 0 and zero_means:
            return value
        if value < minimum:
            extra = f" (or 0 for {zero_means})" if zero_means else ""
            raise argparse.ArgumentTypeError(f"must be at least {minimum}{extra}; got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}; got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds; got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a non-negative, finite number; got {text}")
    return value


def _add_executor_options(p) -> None:
    """Where models are scored: this machine's processes or a Ray cluster (docs/guide/cluster.md)."""
    g = p.add_argument_group("executor", "where models are scored (docs/guide/cluster.md)")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: this process, or --workers processes (default); ray: one Ray task per model "
                        "(needs pip install 'pgen-pvector[ray]')")
    g.add_argument("--address", help="with --executor ray: the cluster to join (auto, or HEAD_IP:6379; "
                                     "default: start Ray on this machine)")
    g.add_argument("--cpus-per-model", type=_fraction, help="CPUs each Ray task declares (default 1)")
    g.add_argument("--gpus-per-model", type=_fraction,
                   help="GPUs each Ray task declares, fractions allowed, e.g. 0.25 (default 1 with "
                        "--device cuda, else 0)")
    g.add_argument("--retries", type=_integer(0), default=3,
                   help="times Ray reruns a model whose worker or node died (default 3); a model that ran "
                        "out of memory is recorded, not rerun")


def _executor(args):
    """The executor the options name, as a context manager that closes it (for the local one,
    its name: the scoring functions make and close the pool themselves)."""
    import contextlib

    from pgen.errors import InputError
    from pgen.executors import make_executor

    ray_only = [o for o, v in (("--address", args.address), ("--cpus-per-model", args.cpus_per_model),
                               ("--gpus-per-model", args.gpus_per_model)) if v is not None]
    if args.executor == "local":
        if ray_only:
            raise InputError(f"{', '.join(ray_only)} apply to --executor ray only")
        return contextlib.nullcontext("local")
    if getattr(args, "workers", 1) != 1:
        raise InputError("--workers applies to the local executor; Ray runs one task per model "
                         "(see --cpus-per-model)")
    cpus = 1.0 if args.cpus_per_model is None else args.cpus_per_model
    return make_executor("ray", address=args.address, cpus_per_model=cpus,  # a RayExecutor closes on exit
                         gpus_per_model=args.gpus_per_model, max_retries=args.retries, device=args.device)


def _add_study(sub):
    p = sub.add_parser("study", help="train small MLPs/CNNs on digits and compare P-vector angles",
                       description="Train small MLPs and CNNs with several seeds; write the angles "
                                   "between model and data P-vectors at init and after training, "
                                   "centered and uncentered, and the angle matrix between trained "
                                   "models, as CSV and PNG.")
    p.add_argument("--dataset", default="digits", help="packaged dataset (digits, mnist5k)")
    p.add_argument("--seeds", type=_integer(1), default=3, help="seeds per architecture (default 3)")
    p.add_argument("--epochs", type=_integer(1), default=15)
    p.add_argument("--split", default="test", choices=["train", "test"], help="sample set for the P-vectors")
    p.add_argument("--out", default="reports/study", help="output folder (default reports/study)")
    p.set_defaults(func=_cmd_study)


def _cmd_study(args):
    from pgen.study import run_study

    res = run_study(args.out, dataset=args.dataset, seeds=range(args.seeds), epochs=args.epochs, split=args.split)
    cols = ["model", "test_acc", "angle_init_centered", "angle_trained_centered",
            "angle_init_uncentered", "angle_trained_uncentered"]
    print(res["models"][cols].round(3).to_string(index=False))
    summary = res["pairs"].groupby("centering")["angle"].agg(["min", "median", "max"]).round(2)
    print("\nangles between trained models (deg):")
    print(summary.to_string())
    print("\nwrote " + ", ".join(str(f) for f in res["files"]))


def _add_paper(sub):
    p = sub.add_parser("paper", help="reproduce the experiments of Liu et al. 2022: figures and a claims table",
                       description="Train MLP and CNN classifiers, an autoencoder and a contrastive model from "
                                   "several seeds with checkpoints at every iteration of epoch 1 and every epoch "
                                   "after; measure each of the paper's ten claims (centered and uncentered "
                                   "P-vectors, 95 percent intervals over runs, the random-vector null) and write "
                                   "claims.md/.csv, one figure per claim, the raw CSVs and every P-vector "
                                   "(pvectors.npz). Resumes: finished runs in OUT/runs are kept.")
    p.add_argument("--out", default="reports/paper", help="output folder (default reports/paper)")
    p.add_argument("--from-tables", action="store_true",
                   help="train nothing: redo the claims, figures and report of OUT from its per-claim CSVs alone "
                        "(a committed study folder, after the verdict rules changed)")
    p.add_argument("--dataset", default="mnist5k",
                   help="packaged dataset (mnist5k, digits, mnist1d) or a torchvision one with --root "
                        "(cifar10, cifar100; use --device cuda)")
    p.add_argument("--root", help="folder of a torchvision dataset (never downloaded)")
    p.add_argument("--seeds", type=_integer(1), help="seeds per paradigm (default 3; --quick 2)")
    p.add_argument("--epochs", type=_integer(1), help="training epochs (default 15; --quick 3)")
    p.add_argument("--samples", type=_integer(2), help="samples per P-vector (default 1000; --quick 200)")
    p.add_argument("--bootstrap", type=_integer(0), help="resamples of the sample set for the stability study "
                                                 "(default 50; 0 skips it)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--quick", action="store_true", help="a small run of the same code (2 seeds, 3 epochs, "
                                                        "the first 1000 training samples, 200 samples per "
                                                        "P-vector, narrow models) in about a minute")
    p.set_defaults(func=_cmd_paper)


def _cmd_paper(args):
    from pgen.devices import check_device
    from pgen.paper import QUICK, PaperSettings, rejudge, run_paper

    if args.from_tables:
        res = rejudge(args.out)
        print(res["claims"][["claim", "centered_verdict", "uncentered_verdict"]].to_string(index=False))
        print(f"\nwrote {Path(args.out) / 'claims.md'} and {len(res['files'])} other files in {args.out}")
        return
    check_device(args.device)

    options = dict(QUICK) if args.quick else {}
    for name in ("seeds", "epochs", "samples", "bootstrap"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    s = PaperSettings(dataset=args.dataset, root=args.root, device=args.device, **options)
    res = run_paper(args.out, s)
    view = res["claims"][["claim", "centered_verdict", "uncentered_verdict"]]
    print(view.to_string(index=False))
    print(f"\nwrote {Path(args.out) / 'claims.md'} and {len(res['files'])} other files in {args.out}")


def _add_pvector(sub):
    p = sub.add_parser("pvector", help="P-vector and spectrum of a feature matrix stored as .npy",
                       description="Compute the P-vector of an (n_samples, n_features) matrix in a "
                                   ".npy file; print its spectrum summary and optionally save it.")
    p.add_argument("features", help=".npy file with an (n, d) matrix")
    p.add_argument("--no-center", action="store_true", help="use the raw matrix (default: centered)")
    p.add_argument("--method", default="auto", choices=["auto", "exact", "gram", "lanczos", "streaming"])
    p.add_argument("--k", type=_integer(1), default=5, help="singular values to report")
    p.add_argument("--save", help="write the P-vector to this .npy file")
    p.add_argument("--against", help="another P-vector (.npy): print the angle to it")
    p.set_defaults(func=_cmd_pvector)


def _cmd_pvector(args):
    import numpy as np

    from pgen.pvector import angle, p_vector_spectrum

    x = _load_array(args.features, "features", mmap=True)
    res = p_vector_spectrum(np.asarray(x), center=not args.no_center, method=args.method, k=args.k)
    print(json.dumps(res.summary(), indent=2, default=float))
    if args.save:
        np.save(args.save, res.vector)
    if args.against:
        print(f"angle: {angle(res.vector, _load_array(args.against, '--against')):.4f} deg")


def _load_array(path: str, what: str, *, mmap: bool = False):
    """A .npy array: a regular file (a FIFO would block forever), numeric, never unpickled."""
    import numpy as np

    from pgen.errors import InputError
    from pgen.paths import plain_file

    plain_file(path, what=what)
    try:
        x = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # not .npy; object arrays (refused, never unpickled)
        raise InputError(f"{what}: {path} cannot be read as a numeric .npy array without pickle: {exc}") from None
    if not isinstance(x, np.ndarray) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise InputError(f"{what}: {path} holds {getattr(x, 'dtype', type(x).__name__)}, not numbers")
    return x


def _add_zoo(sub):
    p = sub.add_parser("zoo", help="build, list and inspect model zoos",
                       description="Build zoos from recipes, list the embedded ones, inspect any zoo.")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zsub.required = True
    b = zsub.add_parser("build", help="train a zoo from a recipe (TOML)",
                        description="Train every model of a recipe (a grid, or runs that draw their own "
                                    "hyperparameters: a [sample] table, as smallcnn-mnist5k) into pgen's zoo "
                                    "format. Resumes an interrupted build without retraining finished models.")
    b.add_argument("recipe", help="embedded recipe name (`pgen zoo list`) or a .toml file")
    b.add_argument("--out", help="zoo folder (default: the cache, $PGEN_CACHE or ~/.cache/pgen/zoos/NAME)")
    b.add_argument("--limit", type=_integer(1), help="train at most this many new models")
    b.add_argument("--workers", type=_integer(1), default=1,
                   help="parallel training processes, one CPU thread each (default 1; the models are "
                        "bit-identical whatever the number)")
    b.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where sampled recipes train: local processes (default) or Ray tasks, one CPU each")
    b.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    b.set_defaults(func=_cmd_zoo_build)
    ex = zsub.add_parser("export", help="write a zoo in another format (the Small CNN Zoo's)",
                         description="Write a pgen zoo of smallcnn models (e.g. smallcnn-mnist5k) in the Small CNN "
                                     "Zoo's published format: weights.npy (a flat row per checkpoint, bias before "
                                     "kernel, TF layout), layout.csv and metrics.csv.gz with the authors' column "
                                     "names, which their loaders and NFN's read.",
                         epilog="example: pgen zoo export smallcnn-mnist5k --format smallcnn --out smallcnn-export")
    ex.add_argument("zoo", help="zoo folder or embedded zoo name (built if missing)")
    ex.add_argument("--format", choices=["smallcnn"], default="smallcnn", help="the format to write (smallcnn)")
    ex.add_argument("--out", required=True, help="folder to write")
    ex.add_argument("--final-only", action="store_true", help="only each run's last checkpoint (default: all)")
    ex.set_defaults(func=_cmd_zoo_export)
    ls = zsub.add_parser("list", help="list the embedded recipes", description="List the embedded recipes.")
    ls.set_defaults(func=_cmd_zoo_list)
    info = zsub.add_parser("info", help="show a zoo's models, hparams and metrics",
                           description="Print a zoo's format and its per-model table; --csv writes it.")
    info.add_argument("zoo", help="zoo folder or embedded zoo name")
    info.add_argument("--csv", help="write the table to this CSV file")
    info.add_argument("--data-root", help="the one folder outside the zoo pgen may read (see `pgen score --help`)")
    info.add_argument("--trust-code", action="store_true", help="allow architectures from your own code "
                                                                "(package.module:callable), which importing runs")
    info.set_defaults(func=_cmd_zoo_info)
    imp = zsub.add_parser(
        "import", help="make a zoo of your own checkpoints (no copying)",
        description="Write a pgen zoo (zoo.json + manifest.jsonl) for checkpoints you already have; they stay "
                    "where they are. Every checkpoint is loaded into the architecture, strictly, first. "
                    "Checkpoints may be bare state dicts or wrapped ({'state_dict': ...}, {'model': ...}, "
                    "Lightning), with module./_orig_mod. prefixes; they are read with weights_only or safetensors.",
        epilog="example: pgen zoo import runs/*.pt --arch torchvision:resnet18 --model-kwargs "
               "'{\"num_classes\": 10, \"in_channels\": 1, \"small_input\": true}' --dataset mnist5k "
               "--metrics metrics.csv --out my-zoo")
    imp.add_argument("checkpoints", nargs="+", help="checkpoint files (.pt, .pth, .safetensors)")
    imp.add_argument("--arch", required=True, help="mlp, cnn, torchvision:NAME, or package.module:callable "
                                                   "(needs --trust-code)")
    imp.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments of the architecture; for "
                                                          "torchvision also in_channels and small_input")
    imp.add_argument("--dataset", required=True, help="digits, mnist5k, a torchvision name, npz:PATH or "
                                                      "imagefolder:PATH")
    imp.add_argument("--transform", default="{}", help="JSON preprocessing the models were trained with: "
                                                       "resize, center_crop, mean, std")
    imp.add_argument("--metrics", required=True, help="CSV: checkpoint, test_acc, [train_acc, initial_checkpoint, "
                                                      "hp.<name>, other metrics]")
    imp.add_argument("--out", required=True, help="zoo folder to write")
    imp.add_argument("--name", help="zoo name (default: the folder's name)")
    imp.add_argument("--num-classes", type=_integer(2), help="default: the dataset's")
    imp.add_argument("--data-kind", help=DATA_KIND_HELP)
    imp.add_argument("--trust-code", action="store_true", help="allow --arch package.module:callable "
                                                               "(importing it runs your code)")
    imp.set_defaults(func=_cmd_zoo_import)


def _json_arg(text: str, flag: str) -> dict:
    from pgen.errors import InputError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{flag} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InputError(f"{flag} must be a JSON object")
    return value


def _cmd_zoo_import(args):
    from pgen.zoo.importer import import_zoo

    zoo = import_zoo(args.checkpoints, arch=args.arch, model_kwargs=_json_arg(args.model_kwargs, "--model-kwargs"),
                     dataset=args.dataset, transform=_json_arg(args.transform, "--transform") or None,
                     metrics=args.metrics, out=args.out, name=args.name, num_classes=args.num_classes,
                     data_kind=args.data_kind, trust_code=args.trust_code)
    print(f"{zoo.name}: {len(zoo)} model(s) of {args.arch}, checkpoints linked (or copied) into "
          f"{Path(args.out) / 'checkpoints'}; zoo written to {args.out}. Score it: pgen score {args.out}"
          + (" --trust-code" if args.trust_code else ""))


def _cmd_zoo_build(args):
    from pgen.zoo.builder import build_zoo

    out = build_zoo(args.recipe, args.out, limit=args.limit, workers=args.workers, executor=args.executor,
                    address=args.address)
    print(f"zoo at {out}")


def _cmd_zoo_export(args):
    from pgen.zoo import load_zoo
    from pgen.zoo.export import export_smallcnn

    out = export_smallcnn(load_zoo(args.zoo), args.out, final_only=args.final_only)
    print(f"wrote {out / 'weights.npy'}, {out / 'layout.csv'} and {out / 'metrics.csv.gz'}")


def _cmd_zoo_list(args):
    from pgen.zoo.builder import embedded_recipes, load_recipe

    for name, path in embedded_recipes().items():
        r = load_recipe(path)
        print(f"{name:<17} {len(r.runs()):>4} models  {r.description}  ({path})")


def _cmd_zoo_info(args):
    import pandas as pd

    from pgen.zoo import load_zoo

    zoo = load_zoo(args.zoo, build=False, data_root=args.data_root, trust_code=args.trust_code)
    print(json.dumps(zoo.describe()))
    frame = zoo.to_frame()
    with pd.option_context("display.width", 200, "display.max_rows", 50):
        print(frame.to_string(index=False, max_rows=50))
    if args.csv:
        frame.to_csv(args.csv, index=False)


def _add_score(sub):
    p = sub.add_parser("score", help="score every model of a zoo and write the report",
                       description="For each model: train/test and pseudo-test accuracy, then every requested "
                                   "measure (default: the angle between its P-vector and the data P-vector). "
                                   "Results go to OUT/results.sqlite as each model finishes (rerunning "
                                   "resumes; adding a measure computes only it); the report follows.")
    p.add_argument("zoo", help="zoo folder, or an embedded zoo name (digits, mnist5k: built first if not cached)")
    p.add_argument("--out", help="output folder (default reports/<zoo>-<date>)")
    p.add_argument("--data-root", help="the one folder outside the zoo pgen may read, named by you as trusted: "
                                       "where a public zoo's data live (Small CNN Zoo datasets, Model Zoos' "
                                       "dataset.pt), or the checkpoints and data an older imported zoo names")
    p.add_argument("--trust-code", action="store_true", help="allow architectures from your own code "
                                                             "(package.module:callable), which importing runs")
    p.add_argument("--measures", default="pvector_angle",
                   help="registered measures, comma-separated (default pvector_angle; `pgen measures` lists them), "
                        "e.g. pvector_angle,distance_from_init")
    p.add_argument("--samples", type=_integer(2, zero_means="all"), default=1000,
                   help="first N samples of the split (default 1000; 0 = all)")
    p.add_argument("--split", default="train", choices=["train", "test"], help="sample set (default train)")
    p.add_argument("--layer", default="penultimate", help="layer name (default penultimate)")
    p.add_argument("--no-center", action="store_true", help="uncentered P-vectors (default: centered)")
    p.add_argument("--seed", type=_integer(0, MAX_SEED), default=0, help="seed of the pseudo-test augmentation and stochastic measures")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dataset-size-term", action="store_true",
                   help="apply Dziugaite et al.'s dataset-size term to bound measures (sqrt(v/m), or (v - log m)/2 "
                        "for log measures; m = the model's training-set size): use it when a zoo varies the "
                        "training-set size (`pgen measures --long` says which measures have one)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA (faster; P-vectors then differ "
                                                       "from the CPU's by ~0.1 degree)")
    p.add_argument("--shared-samples", action="store_true",
                   help="label-using measures and train accuracy on the shared samples, not on each model's own "
                        "training samples and labels (which pgen's recipes record)")
    p.add_argument("--workers", type=_integer(1), default=1, help="CPU worker processes")
    p.add_argument("--angle-matrix", action="store_true", help="also write the model-to-model angle matrix")
    _add_executor_options(p)
    p.add_argument("--limit", type=_integer(1), help="score at most N models that still miss something")
    p.add_argument("--color-by", help="hyperparameter that colours the report's scatter plots, e.g. arch")
    p.add_argument("--data-kind", help=DATA_KIND_HELP)
    p.add_argument("--bootstrap", type=_integer(0, MAX_RESAMPLES), default=1000,
                   help="bootstrap resamples for the report's CIs (default 1000)")
    p.add_argument("--no-report", action="store_true", help="skip the report")
    p.add_argument("--predictor", action="append", default=[], metavar="FOLDER",
                   help="score a learned predictor saved by `pgen learned fit` as the measure learned:<name> "
                        "(repeatable); a model of another weight-space layout fails alone, naming its first "
                        "mismatching layer")
    _add_plugin_options(p)
    p.set_defaults(func=_cmd_score)


def _load_predictors(folders) -> tuple[str, ...]:
    """Register each saved predictor as the measure learned:<name>; their names."""
    from pgen.learned import load

    return tuple(load(folder).register() for folder in folders)


def _print_files(files, out) -> None:
    """Every file a command wrote: the two reports by name, the rest counted by kind."""
    files = [Path(f) for f in files]
    print(f"report: {files[0]} and {files[1]}")
    rest = files[2:]
    if rest:
        kinds = ", ".join(f"{sum(f.suffix == k for f in rest)} {k[1:].upper()}" for k in
                          dict.fromkeys(f.suffix for f in rest))
        print(f"also in {out}: {kinds} ({', '.join(f.name for f in rest)})")


def _default_out(zoo: str) -> Path:
    import datetime as dt

    return Path("reports") / f"{Path(zoo).name}-{dt.date.today().isoformat()}"


def _measure_names(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _cmd_score(args):
    from pgen.report import color_column, write_report
    from pgen.score import ScoreSettings, score_zoo
    from pgen.zoo import load_zoo

    _load_plugins(args)
    out = Path(args.out) if args.out else _default_out(args.zoo)
    measures = _measure_names(args.measures) + _load_predictors(args.predictor)
    settings = ScoreSettings(split=args.split, n_samples=args.samples or None, layer=args.layer,
                             center=not args.no_center, seed=args.seed, allow_tf32=args.tf32,
                             dataset_size_term=args.dataset_size_term, own_training_data=not args.shared_samples,
                             measures=measures, data_kind=args.data_kind)
    executor = _executor(args)
    zoo = load_zoo(args.zoo, data_root=args.data_root, trust_code=args.trust_code)
    color_column(zoo.to_frame().columns, args.color_by, zoo.name)  # checked before scoring, not after
    with executor as executor:
        run = score_zoo(zoo, out, settings=settings, device=args.device, workers=args.workers,
                        angle_matrix_out=args.angle_matrix, limit=args.limit, executor=executor)
    print(f"{run.name}: computed {run.computed} model(s) in this call; {run.models_scored} of "
          f"{len(run.zoo_table)} models have every target; {len(run.errors)} failure(s); results in "
          f"{run.store_path}")
    if len(run.errors):
        first = run.errors.iloc[0]
        where = f"{first['model_id']}" + (f", measure {first['measure']}" if first["measure"] else "")
        print(f"first error ({where}): {first['error']}" + ("" if args.no_report else
                                                            f"; every failure: {out / 'errors.csv'}"))
    if run.models_scored == 0:
        print(f"0 of {len(run.zoo_table)} models scored", file=sys.stderr)
    if not args.no_report:
        files = write_report(run, out, color_by=args.color_by, n_boot=args.bootstrap)
        _print_answer(files)
        _print_files(files, out)
    return 1 if run.models_scored == 0 else 0


def _print_answer(files):
    """The report's answer, as the report says it (read back from its summary.json)."""
    summary = next(f for f in files if f.name == "summary.json")
    for measure, sentences in json.loads(summary.read_text())["answer"].items():
        print(f"{measure}: " + " ".join(sentences))


def _add_report(sub):
    p = sub.add_parser("report", help="write the HTML/Markdown report of scored results",
                       description="Rebuild the report (HTML, Markdown, CSV, PNG) of every run in a results "
                                   "folder (or results.sqlite) written by `pgen score`, from the store alone: "
                                   "the zoo folder is not needed. Several runs: one subfolder each.")
    p.add_argument("results", help="folder holding results.sqlite, or the file itself")
    p.add_argument("--out", help="report folder (default: the results folder)")
    p.add_argument("--bootstrap", type=_integer(0, MAX_RESAMPLES), default=1000, help="bootstrap resamples for CIs")
    p.add_argument("--color-by", help="hyperparameter that colours the scatter plots, e.g. arch")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args):
    from pgen.report import report_from_results

    for run, files in report_from_results(args.results, args.out, color_by=args.color_by, n_boot=args.bootstrap):
        _print_answer(files)
        _print_files(files, Path(files[0]).parent)


def _add_data(sub):
    p = sub.add_parser("data", help="load (or download) a dataset and show its size",
                       description="Load a dataset split: digits and mnist5k ship with packages; mnist, "
                                   "fashion-mnist, cifar10, cifar100 and svhn are read from --root in "
                                   "torchvision's layout and downloaded only with --download.")
    p.add_argument("name", help="dataset name")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--root", help="folder in torchvision's layout (default ~/.cache/pgen/data)")
    p.add_argument("--download", action="store_true", help="download if missing (needs a network)")
    p.set_defaults(func=_cmd_data)


def _cmd_data(args):
    from pgen.data import dataset_info, load_dataset

    ds = load_dataset(args.name, args.split, root=args.root, download=args.download)
    info = dataset_info(args.name)
    print(f"{args.name} {args.split}: {len(ds)} samples, input {info.input_shape}, {info.num_classes} classes")


def _add_pgdl(sub):
    p = sub.add_parser("pgdl", help="predict and score like the PGDL competition",
                       description="Work with PGDL competition task folders: compute a measure on every "
                                   "model (predict) and apply the official conditional-mutual-information "
                                   "score (score).")
    psub = p.add_subparsers(dest="pgdl_command", metavar="PGDL_COMMAND")
    psub.required = True
    sc = psub.add_parser("score", help="the official CMI score of a predictions file",
                         description="Print the competition's conditional mutual information score of "
                                     "PREDICTIONS (JSON: model id -> value) against MODEL_CONFIGS "
                                     "(the task's model_configs.json), with Kendall's tau and the "
                                     "granulated Kendall Psi against the generalization gap.")
    sc.add_argument("predictions", help="JSON file, model id -> measure value (e.g. <task>.predict)")
    sc.add_argument("model_configs", help="the task's model_configs.json")
    sc.add_argument("--verbose", action="store_true", help="also print the per-hparam-pair table")
    sc.set_defaults(func=_cmd_pgdl_score)
    pr = psub.add_parser("predict", help="compute a measure on every model of a task",
                         description="Compute a registered measure (see `pgen measures`) on every model of "
                                     "a PGDL task folder and write OUT/<task>.predict (JSON, model id -> "
                                     "sign x value, larger = predicted to generalize worse) and "
                                     "OUT/<task>.csv (raw values, seconds, errors), as the competition's "
                                     "ingestion did. Rerunning skips finished models.")
    pr.add_argument("task_dir", help="PGDL task folder (input_data/<task> or the toy layout)")
    pr.add_argument("--measure", default="pvector_angle", help="measure name (default pvector_angle)")
    pr.add_argument("--out", default="predictions", help="output folder (default predictions)")
    pr.add_argument("--samples", type=_integer(2, zero_means="all"), default=1000,
                    help="first N training samples (default 1000; 0 = all)")
    pr.add_argument("--time-budget", type=_seconds, help="seconds per model; a model over budget is killed and "
                                                      "recorded (the competition allowed 300)")
    pr.add_argument("--device", default="cpu", help="cpu or cuda")
    pr.add_argument("--seed", type=_integer(0, MAX_SEED), default=0, help="seed for measures that sample")
    _add_plugin_options(pr)
    _add_executor_options(pr)
    pr.set_defaults(func=_cmd_pgdl_predict)


def _cmd_pgdl_score(args):
    import pandas as pd

    from pgen.pgdl import score_predictions

    res = score_predictions(args.predictions, args.model_configs)
    if args.verbose:
        with pd.option_context("display.width", 200):
            print(res["table"].to_string(index=False))
        print(f"kendall tau vs gap: {res['kendall_tau']:.6f}")
        print(f"granulated kendall psi vs gap: {res['psi']:.6f}  " +
              "  ".join(f"{k}={v:.4f}" for k, v in res["psi_per_hparam"].items()))
    print(f"CMI score: {res['cmi']!r}")


def _cmd_pgdl_predict(args):
    from pgen.measures import MeasureSettings
    from pgen.pgdl import predict_task

    _load_plugins(args)
    settings = MeasureSettings(device=args.device, seed=args.seed)
    with _executor(args) as executor:
        table = predict_task(args.task_dir, args.measure, args.out, n_samples=args.samples or None,
                             time_budget=args.time_budget, settings=settings, executor=executor)
    failed = table["error"].notna().sum() if "error" in table else 0
    print(f"{len(table) - failed} of {len(table)} models scored; wrote " + " and ".join(map(str, table.attrs["files"])))
    return 1 if failed else 0


def _add_measures(sub):
    p = sub.add_parser("measures", help="list the generalization measures",
                       description="List every registered measure with its family, sign, fidelity to its "
                                   "source and description. Sign +1: a larger value predicts worse "
                                   "generalization (larger gap); -1: a larger value predicts better "
                                   "generalization. Fidelity: 'faithful' computes the cited paper's "
                                   "definition or its authors' code (adaptations stated), 'inspired by' "
                                   "follows a paper without reproducing it exactly, 'pgen's own' has no "
                                   "published source.")
    p.add_argument("--long", action="store_true",
                   help="one block per measure: source (paper and code), fidelity, sign and the reason for it")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="only these measures; `pgen measures check TARGET` runs the measure contract on TARGET "
                        "(a measure name, or a plugin file or module: every measure it registers), one verdict "
                        "a line, exit 1 when one fails")
    _add_plugin_options(p)
    p.set_defaults(func=_cmd_measures)


def _add_plugin_options(p) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                   help="import your own measures (decorated with @pgen.measures.register) from this file or "
                        "module before anything else; needs --trust-code, since importing runs it (repeatable)")
    if not any("--trust-code" in a.option_strings for a in p._actions):
        p.add_argument("--trust-code", action="store_true",
                       help="allow your own code: --plugin files and package.module:callable architectures")


def _load_plugins(args) -> list[str]:
    """The user's measures, loaded before any name is looked up; the names they added."""
    from pgen.measures import load_plugin

    added = []
    for spec in getattr(args, "plugin", []) or []:
        added += load_plugin(spec, trust_code=args.trust_code)
    return added


SAMPLES_TEXT = {"own": "the model's own training samples and labels, where the zoo records them",
                "shared": "one sample set for every model of the zoo (comparable across models)",
                "none": "none: the weights alone (path_norm: the input shape)"}


def _cmd_measures(args):
    import pandas as pd

    from pgen import DISTRIBUTION
    from pgen.measures import list_measures

    _load_plugins(args)
    if args.names[:1] == ["check"]:
        return _check_measures(args)
    table = list_measures()
    if args.names:
        unknown = sorted(set(args.names) - set(table["name"]))
        if unknown:
            from pgen.errors import UnknownNameError

            raise UnknownNameError(f"unknown measure(s) {', '.join(unknown)}; `pgen measures` lists them")
        table = table[table["name"].isin(args.names)]
    print("sign +1: larger value predicts worse generalization (larger gap); -1: larger predicts better\n")
    if args.long:
        for r in table.itertuples():
            size = {"sqrt": "sqrt(v / m)", "log": "(v - log m) / 2"}.get(r.size_term, "none")
            print(f"{r.name}  [{r.family}]  sign {r.sign}  {r.fidelity}\n  {r.description}\n"
                  f"  source: {r.reference}\n  sign: {r.sign_reason}\n  dataset-size term (--dataset-size-term): "
                  f"{size}\n  samples: {SAMPLES_TEXT[r.samples]}\n")
        return
    needs = table.apply(lambda r: ", ".join([w for w, flag in (("init", r.needs_init), ("images", r.needs_images),
                                                                ("seeded", r.stochastic),
                                                                ("shared samples", r.samples == "shared")) if flag]
                                            + ([f"extra [{r.requires}]"] if r.requires else [])), axis=1)
    table = table.assign(needs=needs)
    print(_fit_to_terminal(table[["name", "family", "sign", "fidelity", "needs"]], notes=table["description"]))
    print(f"\n`pgen measures --long`: each measure in full.\nAn extra: pip install '{DISTRIBUTION}[NAME]'")


def _fit_to_terminal(table, notes=None) -> str:
    """A left-aligned table no wider than the terminal (100 columns when not one), each row
    followed by its note (``notes``, one per row) wrapped below it, indented."""
    import shutil
    import textwrap

    width = max(40, shutil.get_terminal_size((100, 20)).columns)
    cells = [list(map(str, table.columns))] + [[str(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(table.columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths)).rstrip()]
    for i, row in enumerate(cells[1:]):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()[:width])
        if notes is not None:
            lines += textwrap.wrap(str(notes.iloc[i]), width, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def _check_measures(args) -> int:
    from pgen.errors import InputError
    from pgen.measures import REGISTRY, get_measure, load_plugin
    from pgen.measures._contract import check_measure

    targets = args.names[1:]
    if not targets:
        raise InputError("pgen measures check: name a measure, or a plugin file (FILE.py) or module")
    names = []
    for target in targets:
        if target.endswith(".py") or (target not in REGISTRY and "." in target):
            names += load_plugin(target, trust_code=args.trust_code)
        else:
            names.append(get_measure(target).name)
    failed = 0
    for name in dict.fromkeys(names):
        print(f"{name}:")
        for verdict in check_measure(name):
            print("  " + verdict.line())
            failed += not verdict.passed
    print(f"{failed} check(s) failed" if failed else "every check passed")
    return 1 if failed else 0


def _run_suite(args) -> int:
    import pandas as pd

    from pgen.errors import InputError
    from pgen.suites import load_suite, run_suite

    if args.zoos or args.from_tables:
        raise InputError("--suite names its own zoos; give no zoos (or --from-tables) with it")
    if args.samples != 1000 or args.seed != 0 or args.bootstrap is not None or args.all_models or args.shared_samples:
        raise InputError("a suite fixes its settings (samples, seed, bootstrap, converged models), so that its "
                         "leaderboards compare; drop --samples/--seed/--bootstrap/--all-models/--shared-samples")
    suite = load_suite(args.suite)
    measures = [m.strip() for m in args.measures.split(",") if m.strip()] or None
    out = args.out or f"reports/suite-{suite.name}"
    with _executor(args) as executor:
        res = run_suite(suite, out, measures=measures, workers=args.workers, device=args.device,
                        learned=args.learned, learned_settings=_learned_settings(args), executor=executor)
    board = pd.read_csv(Path(out) / "leaderboard.csv")
    cols = ["zoo", "measure", "tau_gap", "tau_gap_ci_low", "tau_gap_ci_high", "tau_gap_holm", "median_seconds"]
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(board[cols].round(3).to_string(index=False))
    print(f"\nsuite {suite.name} v{suite.version}: {Path(out) / 'leaderboard.csv'}, "
          f"{Path(out) / 'leaderboard.json'}, report {res['files'][0]}")
    return 0


def _add_benchmark(sub):
    p = sub.add_parser("benchmark", help="compare every generalization measure on one or more zoos",
                       description="Compute the selected measures (default: all but the optional "
                                   "WeightWatcher ones) on every model of each zoo, reusing OUT/results.sqlite "
                                   "(rerunning resumes), then write per zoo a table with the gap as the target: "
                                   "Kendall tau with bootstrap CIs over hyperparameter cells (models where each "
                                   "cell holds one), the paired difference to the P-vector angle, the PGDL CMI "
                                   "with a permutation null, Psi, Dziugaite et al.'s robust sign agreement with "
                                   "its references, tau vs test accuracy and seconds per model; which "
                                   "differences are resolved after Holm's correction over the measures; and an "
                                   "HTML/Markdown report with a ranking plot. "
                                   "Format fixtures (a .pgen-fixture file) are scored but not ranked.")
    p.add_argument("zoos", nargs="*", help="zoo folders or embedded zoo names (digits, mnist5k)")
    p.add_argument("--out", default=None, help="output folder (default reports/benchmark; with --from-tables, "
                                               "that folder)")
    p.add_argument("--suite", metavar="NAME|FILE.toml", default=None,
                   help="a named, versioned suite (embedded: standard; or a suite file): its zoos and settings, "
                        "and a leaderboard (leaderboard.csv, .json) comparable with anyone's of the same suite "
                        "version and settings hash")
    p.add_argument("--from-tables", metavar="DIR", default=None,
                   help="redo the statistics and the report of an earlier benchmark folder from its stored tables "
                        "(models_<zoo>.csv, errors_<zoo>.csv, benchmark_settings.json) alone, without zoos or "
                        "scoring")
    p.add_argument("--measures", default="", help="comma-separated measure names (default: all; `pgen measures`)")
    p.add_argument("--samples", type=_integer(2), default=1000, help="first N training samples per model (default 1000)")
    p.add_argument("--seed", type=_integer(0, MAX_SEED), default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--workers", type=_integer(1), default=1, help="CPU worker processes")
    p.add_argument("--with-checkpoints", action="store_true",
                   help="also score intermediate checkpoints (default: final models only)")
    p.add_argument("--all-models", action="store_true",
                   help="keep models that missed their zoo's training criterion (default: --converged-only, "
                        "as Jiang et al. and the PGDL competition)")
    p.add_argument("--converged-only", dest="all_models", action="store_false",
                   help="leave out models that missed their zoo's training criterion (the default)")
    p.add_argument("--shared-samples", action="store_true",
                   help="label-using measures see the shared samples, not each model's own training data")
    p.add_argument("--data-kind", help=DATA_KIND_HELP)
    _add_plugin_options(p)
    p.add_argument("--learned", nargs="?", const="statnn", default=None, metavar="NAMES",
                   help="add learned predictors' out-of-fold predictions of test accuracy and the gap "
                        "(statnn, nfn, nfn_np; comma-separated; bare --learned: statnn), folds by hyperparameter "
                        "cell; with --from-tables they are computed now on the recorded zoos")
    p.add_argument("--learned-epochs", type=_integer(1), default=None,
                   help="NFN training epochs per fold (default 50, the authors')")
    p.add_argument("--learned-workers", type=_integer(1), default=1,
                   help="folds fit in parallel processes (one thread each)")
    p.add_argument("--bootstrap", type=_integer(0, MAX_RESAMPLES), default=None,
                   help="bootstrap resamples for the CIs and p-values (default 10000: Holm's correction over m "
                        "measures needs p-values down to 0.05/m, and the smallest bootstrap p is 2/(B+1))")
    _add_executor_options(p)
    p.set_defaults(func=_cmd_benchmark)


def _cmd_benchmark(args):
    import pandas as pd

    from pgen.benchmark import N_BOOT, headline_table, resolved_findings, run_benchmark, summarize_tables
    from pgen.errors import InputError
    from pgen.score import ScoreSettings

    _load_plugins(args)
    if args.suite:
        return _run_suite(args)
    if args.from_tables:
        if args.zoos:
            raise InputError("--from-tables redoes the statistics of stored tables; give no zoos with it")
        res = summarize_tables(args.from_tables, args.out, n_boot=args.bootstrap, learned=args.learned or False,
                               learned_settings=_learned_settings(args))
        res["fixtures"] = {}
    else:
        if not args.zoos:
            raise InputError("name at least one zoo (or --from-tables DIR)")
        measures = [m.strip() for m in args.measures.split(",") if m.strip()] or None
        settings = ScoreSettings(n_samples=args.samples or None, seed=args.seed,
                                 own_training_data=not args.shared_samples, data_kind=args.data_kind)
        with _executor(args) as executor:
            res = run_benchmark(args.zoos, args.out or "reports/benchmark", measures=measures, settings=settings,
                                device=args.device, workers=args.workers, final_only=not args.with_checkpoints,
                                converged_only=not args.all_models, learned=args.learned or False,
                                learned_settings=_learned_settings(args),
                                n_boot=N_BOOT if args.bootstrap is None else args.bootstrap, executor=executor)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 40):
        for name, summary in res["summaries"].items():
            print(f"\n{name}")
            for sentence in resolved_findings(summary):
                print("  " + sentence)
            print(headline_table(summary).to_string(index=False))
    for name in res["fixtures"]:
        print(f"\n{name}: a format fixture, scored but not ranked")
    print("\nreport: " + ", ".join(str(f) for f in res["files"][:2]))


def _learned_settings(args) -> dict:
    return {"workers": args.learned_workers, **({"epochs": args.learned_epochs} if args.learned_epochs else {})}


def _add_learned(sub):
    p = sub.add_parser("learned", help="learned predictors (StatNN, NFN): evaluate out of fold, fit, save",
                       description="Predict test accuracy or the generalization gap from a network's weights: "
                                   "StatNN (Unterthiner et al. 2020) or an NFN (Zhou et al. 2023; nfn: HNP, "
                                   "nfn_np: NP). `evaluate` gives out-of-fold predictions under pgen's one "
                                   "protocol; `fit` trains on a whole zoo and saves the predictor, which "
                                   "`pgen score ZOO --predictor FOLDER` scores on other models.")
    lsub = p.add_subparsers(dest="learned_command", metavar="ACTION")
    lsub.required = True
    for name, helptext in (("fit", "fit a predictor on every model of a zoo and save it (safetensors + JSON)"),
                           ("evaluate", "out-of-fold predictions, Kendall tau and R^2 (with a CI) on a zoo")):
        q = lsub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        q.add_argument("zoo", help="zoo folder, or an embedded zoo name")
        q.add_argument("--predictor", default="nfn", help="statnn, nfn (HNP) or nfn_np (default nfn)")
        q.add_argument("--target", default="test_acc", choices=["test_acc", "gap"],
                       help="what it learns (default test_acc)")
        q.add_argument("--scores", metavar="DIR", default=None,
                       help="take the targets from a `pgen score` output folder (results.sqlite) instead of the "
                            "zoo's records")
        q.add_argument("--final-only", action="store_true", help="only the final model of each run")
        q.add_argument("--epochs", type=_integer(1), default=None, help="NFN training epochs (default 50)")
        q.add_argument("--seed", type=_integer(0, MAX_SEED), default=0, help="seed of every random choice")
        q.add_argument("--device", default="cpu", help="cpu or cuda")
        q.add_argument("--data-root", help="where a public zoo's data live (see `pgen score --help`)")
        q.add_argument("--trust-code", action="store_true", help="allow architectures from your own code")
        if name == "fit":
            q.add_argument("--out", required=True, help="folder for the predictor (weights.safetensors, "
                                                        "predictor.json)")
            q.add_argument("--name", default=None, help="its name (default <predictor>-<target>); scored as "
                                                        "learned:<name>")
            q.set_defaults(func=_cmd_learned_fit)
        else:
            q.add_argument("--folds", type=_integer(2), default=5, help="folds (default 5)")
            q.add_argument("--workers", type=_integer(1), default=1, help="folds fit in parallel processes")
            q.add_argument("--shuffle-target", action="store_true",
                           help="the control: permute the target across models first (tau should fall in its null)")
            q.add_argument("--out", default=None, help="write the out-of-fold predictions here (CSV)")
            q.set_defaults(func=_cmd_learned_evaluate)


def _learned_inputs(args):
    from pgen.errors import InputError
    from pgen.zoo import load_zoo

    zoo = load_zoo(args.zoo, data_root=args.data_root, trust_code=args.trust_code)
    if args.final_only:
        zoo = zoo.final_models()
    table = None
    if args.scores:
        from pgen.results import load_runs

        runs = [r for r in load_runs(args.scores) if r.name == zoo.name]
        if not runs:
            raise InputError(f"{args.scores}: no scoring run of zoo {zoo.name}")
        ids = set(e.id for e in zoo)
        table = runs[-1].table  # the latest run of this zoo
        table = table[table["model_id"].isin(ids)].reset_index(drop=True)
    return zoo, table


def _cmd_learned_fit(args):
    from pgen.learned import fit

    zoo, table = _learned_inputs(args)
    pred = fit(zoo, predictor=args.predictor, target=args.target, table=table, name=args.name, seed=args.seed,
               device=args.device, epochs=args.epochs)
    folder = pred.save(args.out)
    tr = pred.training
    print(f"{pred.predictor} -> {pred.target}: fit on {tr['models']} models of {zoo.name} in "
          f"{tr['fit_seconds']:.1f} s; saved to {folder} (score it: pgen score ZOO --predictor {args.out})")


def _cmd_learned_evaluate(args):
    import pandas as pd

    from pgen.learned import cross_validate

    zoo, table = _learned_inputs(args)
    r = cross_validate(zoo, table, predictor=args.predictor, target=args.target, folds=args.folds, seed=args.seed,
                       device=args.device, workers=args.workers, shuffle_target=args.shuffle_target,
                       epochs=args.epochs)
    lo, hi = r["r2_ci"]
    print(f"{args.predictor} -> {args.target}{' (target shuffled)' if r['shuffled'] else ''} on {zoo.name}: "
          f"{r['models']} models, {r['folds']} folds of {r['groups']} {r['unit']}, fold seeds "
          f"{', '.join(map(str, r['fold_seeds']))}")
    print(f"Kendall tau {r['kendall_tau']:.3f} (random rankings: sd {r['tau_null_sd']:.3f}); R^2 {r['r2']:.3f} "
          f"[{lo:.3f}, {hi:.3f}]; fit {r['fit_seconds']:.1f} s in all, predict "
          f"{1000 * r['predict_seconds_per_model']:.2f} ms per model")
    if args.out:
        from pgen.paths import output_path

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"model_id": r["predictions"].index, "prediction": r["predictions"].to_numpy(),
                      "fold": r["fold"].to_numpy()}).to_csv(output_path(out.parent, out.name), index=False)
        print(f"predictions: {out}")


def build_parser() -> argparse.ArgumentParser:
    from pgen import __version__

    parser = argparse.ArgumentParser(
        prog="pgen",
        description="Predict which models of a zoo generalize: P-vector angles, other "
                    "generalization measures, rank and log-log statistics, reports.",
    )
    parser.add_argument("--version", action="version", version=f"pgen {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of every error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


_SUBCOMMANDS = [_add_score, _add_report, _add_benchmark, _add_learned, _add_zoo, _add_pgdl, _add_measures, _add_data, _add_study, _add_paper, _add_pvector]


def main(argv=None) -> int:
    """Run one command. pgen's own errors (:class:`~pgen.errors.PgenError`) and OS errors
    print one line and exit 2; anything else is a bug and prints its full traceback
    (``--debug`` prints tracebacks for every error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    saved_debug = os.environ.get("PGEN_DEBUG")
    if args.debug:
        os.environ["PGEN_DEBUG"] = "1"  # worker failures print their tracebacks too
    try:
        return _run(args)
    finally:  # main() may be called again in the same process (tests, notebooks)
        if saved_debug is None:
            os.environ.pop("PGEN_DEBUG", None)
        else:
            os.environ["PGEN_DEBUG"] = saved_debug


def _run(args) -> int:
    import warnings

    from pgen.errors import PgenNotice
    from pgen.text import EscapingWriter, printable

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PgenNotice):
            print(f"pgen {args.command}: note: {printable(str(message))}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    default_show, stdout = warnings.showwarning, sys.stdout
    warnings.showwarning = show
    sys.stdout = EscapingWriter(stdout)  # names from zoos reach the terminal without control characters
    try:
        return _call(args)
    finally:
        warnings.showwarning, sys.stdout = default_show, stdout


def _call(args) -> int:
    from pgen.errors import PgenError
    from pgen.text import printable

    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (PgenError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"pgen {args.command}: error: {printable(exc)}", file=sys.stderr)
        return 2
    except Exception:  # a bug must look like a bug
        traceback.print_exc()
        print(f"pgen {args.command}: internal error (a bug in pgen; the traceback above says where)", file=sys.stderr)
        return 3
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
