"""PML's own losses as baselines: thin registry entries, so the harness, `pmlbal.create` and the
tuner treat them like pmlbal's (their classes stay PML's)."""

from ..registry import register_pml_loss

register_pml_loss("NTXentLoss", tune={"temperature": ("log", 1 / 64, 1.0)})
register_pml_loss("SupConLoss", tune={"temperature": ("log", 1 / 64, 1.0)})
register_pml_loss("ContrastiveLoss", tune={"pos_margin": ("linear", 0.0, 0.8, 0.1, 0.025),
                                           "neg_margin": ("linear", 0.2, 1.8, 0.1, 0.025)})
