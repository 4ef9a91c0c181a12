"""One definition per term, printed at the end of every report, so that a word means the
same thing on every page (three different things were once called "gap")."""

from __future__ import annotations

__all__ = ["GLOSSARY", "add_glossary"]

GLOSSARY = {
    "gap": "the generalization gap: train accuracy (on the model's own training samples and labels) minus "
           "test accuracy. Larger is worse. The only thing a bare 'gap' means in pgen's reports.",
    "relative spectral gap": "(sigma1 - sigma2) / sigma1 of a feature matrix; near 0 the P-vector is poorly "
                             "determined (pgen warns below 0.001). Not the generalization gap.",
    "sigma ratio": "sigma1 / sigma2 of a feature matrix (`pvector_angle.sigma_ratio`).",
    "P-vector": "the top left singular vector of a model's feature matrix over n fixed samples (Liu et al. 2022): "
                "a unit vector in R^n. The data P-vector is the same for the raw inputs.",
    "angle": "arccos of the absolute dot product of two unit P-vectors, in degrees (0 to 90); two random unit "
             "vectors in R^n sit near "
             "90 degrees (the null printed beside angles).",
    "centered": "feature means removed before the SVD (the PCA reading, pgen's default); uncentered: the raw matrix.",
    "sign": "+1 when a measure's authors claim a larger value predicts worse generalization, -1 when better. Every "
            "correlation, tau and Psi in every report is of sign x value, so a positive tau against the gap (a "
            "negative one against test accuracy) means the authors' direction; scatter plots, histograms and "
            "log-log fits show the values themselves.",
    "Kendall tau": "tau-b between sign x measure and the target over models; its CI is a percentile bootstrap over "
                   "the resampling unit, its null the spread under random rankings.",
    "resampling unit": "what a bootstrap draws with replacement: whole hyperparameter cells (every seed of a cell "
                       "together) where a cell holds several models, since seeds of one cell are replicates, not "
                       "independent models; single models where every cell holds one.",
    "Holm": "Holm's step-down correction for testing many measures at once: within a family (the measures of one "
            "zoo, one target, one test) a result counts as resolved only when its adjusted p-value is at most 0.05, "
            "which keeps the chance of any false 'resolved' in the family under 5%.",
    "robust view": "Dziugaite et al. 2020: the share of coupled model pairs (differing in one hyperparameter) whose "
                   "gap difference a measure orders right, per environment (a change of one hyperparameter between "
                   "two values, pooled over the others), averaged and at the worst environment; beside it the same "
                   "view of a noisy copy of the gap and of random rankings.",
    "CMI": "the PGDL competition's conditional mutual information between a measure's ranking and the gap's, "
           "conditioned on hyperparameters (sign-free); its null: the CMI of randomly permuted values.",
    "Psi": "Jiang et al. 2019's granulated Kendall: the mean over hyperparameters of tau within cells that vary "
           "only that hyperparameter.",
    "pseudo-test accuracy": "accuracy on augmented copies of the scored samples (the policy is in the settings).",
    "samples used": "the number of samples actually scored, after the split and any limit, not the number asked for.",
}


def add_glossary(doc, terms=None) -> None:
    """Append a Glossary section with ``terms`` (default: every term) to a Document."""
    doc.heading("Glossary")
    doc.bullets([f"**{t}**: {GLOSSARY[t]}" for t in (terms or GLOSSARY)])
