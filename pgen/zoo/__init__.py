"""Model zoos: one interface, several formats, detected by ``load_zoo``.

Formats: pgen's own (``zoo.json``), PGDL competition task folders, the Small CNN Zoo,
and Model Zoos (Ray Tune trial folders). ``load_zoo("digits")`` builds the embedded
recipe first if it is not cached.
"""

from __future__ import annotations

from pathlib import Path

from pgen.zoo.base import Zoo, ZooEntry, ZooError, safe_join

__all__ = ["Zoo", "ZooEntry", "ZooError", "load_zoo", "safe_join"]


def _formats():
    from pgen.zoo.native import NativeZoo

    formats = [NativeZoo]
    for mod, cls in (("pgen.zoo.pgdl", "PGDLZoo"), ("pgen.zoo.smallcnn", "SmallCNNZoo"),
                     ("pgen.zoo.modelzoos", "ModelZoosZoo")):
        try:
            module = __import__(mod, fromlist=[cls])
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        formats.append(getattr(module, cls))
    return formats


def load_zoo(path: str | Path, *, build: bool = True, progress: bool = True, data_root: str | Path | None = None,
             trust_code: bool = False) -> Zoo:
    """Open a zoo folder, detecting its format.

    Parameters
    ----------
    path : str or Path
        A zoo folder (pgen's own, the Small CNN Zoo, Model Zoos, a PGDL task, an imported
        zoo), or the name of an embedded recipe (``digits``, ``mnist5k``, ...), which is
        built into the cache folder first unless it is already there.
    build : bool, default=True
        Build an embedded recipe that is not cached yet; with False that is an error.
    progress : bool, default=True
        Show a progress bar while building.
    data_root : str or Path, optional
        Where a public zoo's data live when not beside it (the Small CNN Zoo's datasets,
        Model Zoos' ``dataset.pt``); the one folder outside the zoo pgen may read. Formats
        that keep their data in the zoo refuse it.
    trust_code : bool, default=False
        Let a pgen zoo build architectures from the user's own code
        (``arch = "package.module:callable"``), which importing runs.

    Returns
    -------
    Zoo
        ``len(zoo)``, its entries (``.id``, ``.hparams``, ``.metrics``, ``.load_model()``),
        ``zoo.dataset(split)``, ``zoo.to_frame()``, ``zoo.hparam_grid()``.

    Raises
    ------
    ZooError
        When ``path`` is neither a zoo folder nor an embedded name, or the folder's files
        are malformed or escape it (the message names the file).

    Examples
    --------
    >>> zoo = load_zoo("model_zoos/digits")          # doctest: +SKIP
    >>> len(zoo), zoo.to_frame().columns[:3].tolist()  # doctest: +SKIP
    """
    p = Path(path)
    if not p.exists():
        from pgen.zoo.builder import build_zoo, default_cache_dir, embedded_recipes

        if str(path) in embedded_recipes():
            cached = default_cache_dir() / "zoos" / str(path)
            if build:
                cached = build_zoo(str(path), cached, progress=progress)
            elif not (cached / "zoo.json").is_file():
                raise ZooError(f"the embedded zoo {path} is not built yet: `pgen zoo build {path}` builds it "
                               f"(into {cached}), and `pgen score {path}` builds it first")
            p = cached
        else:
            raise ZooError(f"no zoo at {path!s}, and it is not an embedded zoo name ({sorted(embedded_recipes())})")
    if not p.is_dir():
        raise ZooError(f"{p} is not a folder")
    p = p.absolute()  # every reader joins paths to its root: one absolute root, whatever the working directory
    for fmt in _formats():
        if fmt.detect(p):
            import inspect

            accepted = inspect.signature(fmt).parameters
            kwargs = {}
            if data_root is not None:
                if "data_root" not in accepted:
                    raise ZooError(f"{p}: a {fmt.format} zoo keeps its data in the zoo folder; data_root does not apply")
                kwargs["data_root"] = data_root
            if trust_code and "trust_code" in accepted:
                kwargs["trust_code"] = True
            return fmt(p, **kwargs)
    raise ZooError(f"{p}: no known zoo format (expected zoo.json, a PGDL task, a Small CNN Zoo or Model Zoos folder)")
