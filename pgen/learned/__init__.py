"""Learned predictors of generalization from a network's weights.

* **StatNN** (Unterthiner et al. 2020): statistics of each layer's weights, gradient-boosted
  trees (:mod:`pgen.learned.statnn`).
* **NFN** (Zhou et al., NeurIPS 2023): a permutation-invariant neural functional built from
  the authors' ``nfn`` layers, HNP (``"nfn"``) or NP (``"nfn_np"``) (:mod:`pgen.learned.nfn`).

Every predictor is judged by one protocol, out-of-fold predictions with folds by the design's
unit (:func:`cross_validate`, :mod:`pgen.learned.protocol`), and can be fit once on a zoo
(:func:`fit`), saved without pickle (:meth:`LearnedPredictor.save`), loaded (:func:`load`)
and scored on other models as the measure ``learned:<name>`` (``pgen score --predictor``).
"""

from pgen.learned.predictor import (PREDICTORS, TARGETS, LearnedPredictor, fit, fit_on_models, load,
                                    loaded_predictors, target_table)
from pgen.learned.protocol import cross_validate, fold_assignment, fold_seed, r2_interval
from pgen.learned.statnn import learned_baseline, statnn_features
from pgen.learned.weightspace import LayerSpec, check_layout, layout_mismatch, weight_layout, weight_space

__all__ = ["PREDICTORS", "TARGETS", "LearnedPredictor", "fit", "fit_on_models", "load", "loaded_predictors",
           "target_table", "cross_validate", "fold_assignment", "fold_seed", "r2_interval", "learned_baseline",
           "statnn_features", "LayerSpec", "check_layout", "layout_mismatch", "weight_layout", "weight_space"]
