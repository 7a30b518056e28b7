"""Optional TensorBoard logging of a training run (`pmlbal train --tensorboard DIR`).

The run record stays the source of truth (`pmlbal leaderboard` reads records only); this mirrors it
for people who watch runs in TensorBoard: per step the loss and, for pmlbal's balanced losses, its
two terms (`train/pos_term`, `train/entropy_term`, docs/method.md, 'Balanced contrastive losses'); per evaluation every metric
(`eval/<metric>`, the untrained model at step 0); and the configuration as hparams with the final
metrics. Each run writes to DIR/<dataset>-<loss>-<config key>-s<seed>, so runs logged to one DIR are
compared side by side, and a resumed run continues its own curves.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

INSTALL_HINT = "pip install 'pmlbal[tensorboard]'"


class TensorBoardLog:
    """Writes one run's scalars under `root`/<run name> with torch's `SummaryWriter`.

    Raises ImportError naming the extra to install when the tensorboard package is missing.
    """

    def __init__(self, root: str | Path) -> None:
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard's own message names no install command)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(f"--tensorboard needs the tensorboard package: {INSTALL_HINT}") from None
        self._writer_class = SummaryWriter
        self.root = Path(root)
        self.writer = None

    def open(self, name: str, initial: dict[str, float] | None, start_step: int) -> None:
        """Start the run's log at step `start_step` (0, or the last step of a resumed run's checkpoint):
        a resumed run drops what the interrupted session logged past its checkpoint, so no step appears twice."""
        self.dir = self.root / name
        # Steps up to start_step (the checkpoint's last) are kept; TensorBoard purges from purge_step on.
        self.writer = self._writer_class(log_dir=str(self.dir), purge_step=start_step + 1 if start_step else None)
        if start_step == 0 and initial:
            self._metrics(initial, 0)

    def epoch(self, entry: dict[str, Any], steps: list[dict[str, torch.Tensor]], first_step: int) -> None:
        """One epoch's per-step losses and terms (steps `first_step`+1, ...), its learning rate and any
        evaluation it ended with."""
        # One host sync per epoch, not one per step.
        values = {k: torch.stack([s[k] for s in steps]).float().cpu().tolist() for k in steps[0]} if steps else {}
        for name, series in values.items():
            for i, v in enumerate(series, first_step + 1):
                self.writer.add_scalar(f"train/{name}", v, i)
        last = first_step + len(steps)
        self.writer.add_scalar("train/epoch_loss", entry["train_loss"], last)
        self.writer.add_scalar("train/lr", entry["lr"], last)
        if "metrics" in entry:
            self._metrics(entry["metrics"], last)
        self.writer.flush()  # on disk before the epoch's checkpoint: a resumed run purges only later steps

    def close(self, cfg, final: dict[str, float], last_step: int) -> None:
        """The final metrics and the configuration as hparams; then flush and close."""
        self._metrics(final, last_step)
        metrics = {f"hparam/{k}": float(v) for k, v in final.items() if isinstance(v, (int, float))}
        # run_name "." keeps the hparams in the run's own folder rather than a new timestamped one.
        self.writer.add_hparams(hparams(cfg), metrics, run_name=".", global_step=last_step)
        self.close_quietly()

    def close_quietly(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _metrics(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(f"eval/{k}", float(v), step)


def hparams(cfg) -> dict[str, Any]:
    """The configuration as TensorBoard hparams: numbers, strings and booleans, loss arguments flattened
    to `loss_kwargs.<name>`, None written as the string 'None' (the hparams plugin takes no nulls)."""
    out: dict[str, Any] = {}
    for k, v in asdict(cfg).items():
        items = {f"{k}.{a}": b for a, b in v.items()} if isinstance(v, dict) else {k: v}
        for name, value in items.items():
            out[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out
