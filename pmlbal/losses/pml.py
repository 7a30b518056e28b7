"""PML's own losses as baselines: thin registry entries, so the harness, `pmlbal.create` and the
tuner treat them like pmlbal's (their classes stay PML's)."""

from ..registry import register_pml_loss

register_pml_loss("NTXentLoss", tune={"temperature": ("log", 1 / 64, 1.0)})
register_pml_loss("SupConLoss", tune={"temperature": ("log", 1 / 64, 1.0)})
register_pml_loss("ContrastiveLoss", tune={"pos_margin": ("linear", 0.0, 0.8, 0.1, 0.025),
                                           "neg_margin": ("linear", 0.2, 1.8, 0.1, 0.025)})
# Proxies (num_classes x embedding_size, filled in by the harness) train at 100 x lr by default
# (`TrainConfig.loss_lr`); margin and alpha as in Kim et al. 2020 (defaults 0.1 and 32).
register_pml_loss("ProxyAnchorLoss", tune={"margin": ("linear", 0.0, 0.4, 0.05, 0.0125),
                                           "alpha": ("log", 4.0, 128.0)})
