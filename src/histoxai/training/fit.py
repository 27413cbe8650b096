"""The fit loop: frozen-backbone phase, fine-tuning phase, early stopping, best checkpoint.

Loss: per-target mean squared error of standardised predictions (NaN targets left out),
averaged with ``loss_weights``; with ``decorrelation`` > 0 plus that times the mean squared
off-diagonal correlation over the batch of each backbone stage's pooled channels, averaged
over stages (DeCov, Cogswell et al. 2016, on correlations so that shrinking the features
does not pay; logged as ``train/feature_correlation``, not part of ``train/loss``).
Each epoch reports ``train/loss`` (running, with augmentation and dropout), ``val/loss`` and ``val/{r2,mse,mae}_<target>`` in real units,
and ``lr``. A seed fixes initialisation-independent randomness (shuffling, dropout,
augmentation), so a CPU run repeats exactly.

Early stopping (``patience``) never ends fine-tuning before ``min_epochs`` (by default the
learning-rate schedule's length: stopping while the LR is still near its peak left the
demo models underfit). A non-finite training loss, validation loss or validation metric
raises :class:`NonFiniteTrainingError` at the end of its epoch, so no caller can save or
register a model that predicts NaN. The loss is summed on the device and read once per
epoch: no step waits for the host.

Data-parallel (``group`` of several ``torchrun`` processes, see
:mod:`histoxai.training.distributed`): the model is wrapped in DDP (gradients averaged),
the loaders serve each rank its share of every epoch, the training loss and the
validation sums are added over ranks before any metric is computed, and every rank
makes the same early-stopping decision, so all ranks hold the same weights and history.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from histoxai.config import TrainConfig
from histoxai.data.datasets import PatchBatches, target_matrix, to_model_input
from histoxai.errors import UserError
from histoxai.models.backbones import capture, stage_layers
from histoxai.models.regressor import Regressor
from histoxai.training.augment import augment_batch
from histoxai.training.distributed import Group, agree, all_reduce_sum, sync_buffers, wrap_model
from histoxai.training.metrics import TargetMetrics
from histoxai.training.runtime import autocast, resolve_device, resolve_precision
from histoxai.training.schedules import lr_schedule, set_lr

EpochCallback = Callable[[int, dict[str, float]], None]


class NonFiniteTrainingError(UserError, ValueError):
    """The training loss or a validation metric became NaN or infinite (e.g. a learning
    rate far too high). Raised by :func:`fit`; nothing of the run may be saved or
    registered."""


def min_finetune_epochs(cfg: TrainConfig) -> int:
    """Fine-tuning epochs that always run before early stopping may end the phase.

    ``train.min_epochs`` when set, else the schedule's length: ``warmup_epochs +
    decay_epochs`` for ``cosine`` (capped at ``epochs``), 1 for a constant LR.
    """
    if cfg.min_epochs > 0:
        return min(cfg.min_epochs, cfg.epochs)
    if cfg.schedule == "cosine":
        return min(cfg.warmup_epochs + cfg.decay_epochs, cfg.epochs)
    return 1


@dataclass
class FitResult:
    """What :func:`fit` did. ``history`` has one dict of metrics per epoch (with ``epoch``
    and ``phase``); the model holds the weights of ``best_epoch``."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf
    device: str = "cpu"
    precision: str = "fp32"
    seconds: float = 0.0


def weighted_loss(z: torch.Tensor, t: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over targets of the MSE between standardised ``z`` and ``t`` (B, T)."""
    se, n = squared_errors(z, t)
    return (se / n.clamp_min(1) * weights).sum() / weights.sum()


def decorrelation_penalty(features: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal Pearson correlation of ``features`` (B, F) over the batch.

    0 when every pair of features is uncorrelated over the batch, 1 when all are one
    feature (up to sign and scale). A feature constant over the batch (a dead channel)
    counts as uncorrelated with every other. Needs B >= 2 and F >= 2.
    """
    f = features.float()
    f = f - f.mean(0)
    f = f / f.norm(dim=0).clamp_min(1e-6)
    corr = f.T @ f
    n = corr.shape[0]
    return (corr.square().sum() - corr.diagonal().square().sum()) / (n * (n - 1))


def pooled_channels(stage_output: torch.Tensor) -> torch.Tensor:
    """(B, C) global average of a stage output: NCHW maps over H and W, (B, N, C) tokens over N."""
    return stage_output.mean((2, 3)) if stage_output.ndim == 4 else stage_output.mean(1)


def stage_decorrelation(stage_outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over the backbone's stages of :func:`decorrelation_penalty` of each stage's
    :func:`pooled_channels`."""
    return torch.stack([decorrelation_penalty(pooled_channels(f)) for f in stage_outputs]).mean()


def captured_stages(model: Regressor, on: bool = True) -> contextlib.AbstractContextManager:
    """While open, the yielded list holds the outputs of the backbone's stages (timm's
    ``feature_info``, shallow to deep) from the model's last forward pass (when ``on``;
    else it stays empty)."""
    return (
        capture([model.get_submodule(p) for p in stage_layers(model)]) if on else contextlib.nullcontext([])
    )


def squared_errors(z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target sums of squared errors and counts (T,), leaving out NaN targets."""
    keep = ~torch.isnan(t)
    se = torch.where(keep, (z.float() - torch.nan_to_num(t)) ** 2, 0.0)
    return se.sum(0), keep.sum(0)


def fit(
    model: Regressor,
    train: PatchBatches,
    val: PatchBatches,
    cfg: TrainConfig,
    seed: int = 0,
    loss_weights: Mapping[str, float] | None = None,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
    group: Group | None = None,
) -> FitResult:
    """Train ``model`` in place and leave it holding the best weights (lowest val loss).

    Args:
        model: the regressor (its ``targets`` order the columns of the batches).
        train: shuffled training batches (``train.set_epoch`` is called each epoch); this
            rank's share when ``group`` has several ranks.
        val: validation batches (early stopping and model selection); this rank's share.
        cfg: the ``train`` config section.
        seed: seeds dropout, shuffling and augmentation.
        loss_weights: per-target loss weight (missing targets: 1).
        on_epoch: called as ``on_epoch(epoch, metrics)`` after each epoch.
        progress: show a tqdm bar per epoch.
        group: the data-parallel process group (default: this process alone).
    """
    if len(train) == 0 or len(val.ids) == 0:
        raise ValueError(f"need training and validation patches, got {len(train.ids)} and {len(val.ids)}")
    with cpu_threads(cfg.threads):
        return _fit(model, train, val, cfg, seed, loss_weights, on_epoch, progress, group or Group())


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (0: unchanged), restoring the count afterwards."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(model, train, val, cfg, seed, loss_weights, on_epoch, progress, group) -> FitResult:
    torch.manual_seed(seed + group.rank)  # dropout differs between ranks; rank 0 as one process
    gen = torch.Generator().manual_seed(seed + group.rank)
    device = group.device(resolve_device(cfg.device))  # cuda:<local_rank> for each rank
    amp = resolve_precision(cfg.precision, device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    weights = torch.tensor([(loss_weights or {}).get(t, 1.0) for t in model.targets], device=device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    result = FitResult(device=str(device), precision=str(amp).replace("torch.", "") if amp else "fp32")
    best_state: dict | None = None
    epoch, start = 0, time.perf_counter()
    val_counts = _value_counts(val, model.targets)
    progress = progress and group.is_main

    def phase(name: str, max_epochs: int, schedule: Callable[[float], float], min_epochs: int) -> None:
        nonlocal epoch, best_state
        params = [p for p in model.parameters() if p.requires_grad]
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        opt = opt_cls(params, lr=schedule(0.0), weight_decay=cfg.weight_decay)
        run_model = wrap_model(model, group)  # after freezing: DDP averages what requires grad
        run_model = torch.compile(run_model) if cfg.compile else run_model
        stale = 0
        for local in range(max_epochs):
            train.set_epoch(epoch)
            model.train()
            if name == "frozen":
                model.backbone.eval()  # frozen batch-norm statistics too
            # loss·patches, patches, penalty·patches
            total = torch.zeros(3, dtype=torch.float64, device=device)
            steps = len(train)
            bar = tqdm(train, total=steps, desc=f"{name} epoch {epoch}", leave=False, disable=not progress)
            with captured_stages(model, cfg.decorrelation > 0) as stages:
                for step, (images, y, _) in enumerate(bar):
                    lr = schedule(local + step / steps)
                    set_lr(opt, lr)
                    x = augment_batch(to_model_input(images, device, cfg.channels_last), cfg.augment, gen)
                    t = model.standardize(y.to(device, non_blocking=True))
                    with autocast(device, amp):
                        z = model.standardize(run_model(x))
                    loss = weighted_loss(z, t, weights)
                    penalty = stage_decorrelation(stages) if stages and len(y) > 1 else loss.new_zeros(())
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss + cfg.decorrelation * penalty).backward()
                    scaler.step(opt)
                    scaler.update()
                    total[0] += loss.detach().double() * len(y)  # stays on the device: no sync
                    total[1] += len(y)
                    total[2] += penalty.detach().double() * len(y)
            sync_buffers(model, group)
            total = all_reduce_sum(total, group).tolist()  # the one host sync of the epoch
            metrics = {"train/loss": total[0] / max(total[1], 1), "lr": lr}
            if cfg.decorrelation > 0:
                metrics["train/feature_correlation"] = total[2] / max(total[1], 1)
            metrics.update(evaluate(model, val, "val", device, amp, weights, cfg.channels_last, group))
            _check_finite(metrics, val_counts, name, epoch)
            result.history.append({"epoch": epoch, "phase": name, **metrics})
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            if progress:
                tqdm.write(_summary(name, epoch, metrics, model.targets))
            if metrics["val/loss"] < result.best_val_loss:
                result.best_val_loss, result.best_epoch, stale = metrics["val/loss"], epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            epoch += 1
            if agree(stale >= cfg.patience and local + 1 >= min_epochs, group, device):
                break
        if best_state is not None:
            model.load_state_dict(best_state)

    if cfg.frozen_epochs > 0:
        model.freeze_backbone(True)
        phase("frozen", cfg.frozen_epochs, lambda e: cfg.lr, 1)
        model.freeze_backbone(False)
    phase("finetune", cfg.epochs, lr_schedule(cfg), min_finetune_epochs(cfg))
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def _value_counts(batches: PatchBatches, targets) -> dict[str, int]:
    """Patches with a value per target among ``batches`` (a metric of fewer than 2 is NaN)."""
    y = target_matrix(batches.store, batches.ids, targets)
    return {t: int(np.isfinite(y[:, j]).sum()) for j, t in enumerate(targets)}


def _check_finite(metrics: Mapping[str, float], counts: Mapping[str, int], phase: str, epoch: int) -> None:
    """Raise :class:`NonFiniteTrainingError` on a NaN/inf loss or metric (a metric of a
    target with fewer than 2 validation values is NaN by definition and allowed)."""
    bad = {
        k: v
        for k, v in metrics.items()
        if not math.isfinite(v)
        and (k in ("train/loss", "val/loss") or counts.get(k.rsplit("_", 1)[-1], 2) >= 2)
    }
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise NonFiniteTrainingError(
            f"non-finite metrics at {phase} epoch {epoch} ({shown}); nothing is saved or registered: "
            "lower train.lr / train.warmup_target_lr or check the targets"
        )


@torch.no_grad()
def evaluate(
    model: Regressor,
    batches: PatchBatches,
    split: str,
    device: torch.device,
    amp: torch.dtype | None = None,
    weights: torch.Tensor | None = None,
    channels_last: bool = True,
    group: Group | None = None,
) -> dict[str, float]:
    """``split/loss`` and ``split/{r2,ev,mse,mae}_<target>`` of ``model`` on ``batches``
    (with a ``group`` of several ranks: on the union of every rank's ``batches``)."""
    model.eval()
    weights = weights if weights is not None else torch.ones(len(model.targets), device=device)
    metrics = TargetMetrics(model.targets)
    n_t = len(model.targets)
    sums = torch.zeros(2 * n_t, dtype=torch.float64, device=device)  # squared errors, counts
    for images, y, _ in batches:
        y = y.to(device)
        with autocast(device, amp):
            yhat = model(to_model_input(images, device, channels_last)).float()
        sums += torch.cat(squared_errors(model.standardize(yhat), model.standardize(y))).double()
        metrics.update(yhat, y)
    sums = all_reduce_sum(torch.cat([sums, metrics.state().to(device)]), group or Group()).cpu()
    metrics.load_state(sums[2 * n_t :])
    se_sum, n_sum = sums[:n_t], sums[n_t : 2 * n_t]
    loss = (se_sum / n_sum.clamp_min(1) * weights.double().cpu()).sum() / weights.double().sum().cpu()
    return {f"{split}/loss": float(loss), **metrics.compute(split)}


@torch.no_grad()
def predict(
    model: Regressor,
    batches: PatchBatches,
    device: torch.device | str = "cpu",
    amp: torch.dtype | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (N, T) in real units and the patch ids (N,) they belong to."""
    device = torch.device(device)
    model.eval().to(device)
    out, ids = [], []
    for images, _, batch_ids in tqdm(batches, desc="predict", leave=False, disable=not progress):
        with autocast(device, amp):
            out.append(model(to_model_input(images, device)).float().cpu().numpy())
        ids.append(batch_ids.numpy())
    if not out:
        return np.zeros((0, len(model.targets)), np.float32), np.zeros(0, np.int64)
    return np.concatenate(out), np.concatenate(ids)


def _summary(phase: str, epoch: int, metrics: dict[str, float], targets) -> str:
    r2 = " ".join(f"r2_{t}={metrics.get(f'val/r2_{t}', float('nan')):.3f}" for t in targets)
    return (
        f"{phase} epoch {epoch}: train/loss={metrics['train/loss']:.4f} "
        f"val/loss={metrics['val/loss']:.4f} {r2} lr={metrics['lr']:.2e}"
    )
