"""Number of parameters (the VC-dimension-style baseline of Jiang et al. 2020)."""

from pgen.measures import register


@register("num_params", samples="none", sign_reason='counting bounds grow with the number of parameters (Jiang et al. 2020, sec. 6)',
          size_term='sqrt', sign=1, family="size", description="number of trainable parameters",
          reference="Jiang et al., ICLR 2020 (#params)")
def num_params(model, init_model, data, settings) -> float:
    return float(sum(p.numel() for p in model.parameters()))
