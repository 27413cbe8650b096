"""Typed configuration mirroring ``params.yaml``.

``params.yaml`` is parsed once into frozen dataclasses. Unknown keys, wrong types and
out-of-range values are errors naming the dotted key, the value and what was expected.
Sections: ``base``, ``data``, ``model``, ``train``, ``tune``, ``explain``, ``xai_eval``,
``dashboard``. Overrides (``--set train.lr=3e-5``) are parsed as YAML scalars and
type-checked like the file.

Example:
    >>> cfg = load_config("params.yaml", ["data.patch_size_px=32"])
    >>> cfg.data.patch_size_px
    32
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from histoxai.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration value is missing, unknown, mistyped or out of range."""


def bounded(
    default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None
) -> Any:
    """A dataclass field whose numeric value (or each element) must lie in a range."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le})


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class BaseConfig:
    """Seeds and paths. ``seeds``: train (and report) the same model once per seed; empty:
    ``[seed]``. The first is the registered model; reports give mean and spread across
    them (``seed_list``)."""

    seed: int = bounded(0, ge=0)
    seeds: tuple[int, ...] = bounded((), ge=0)
    data_dir: str = "data"
    patches_dir: str = "data/patches"
    models_dir: str = "models"
    reports_dir: str = "reports"
    saliency_dir: str = "data/saliency"

    def __post_init__(self) -> None:
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"base.seeds={list(self.seeds)}: a seed appears twice")

    def seed_list(self) -> tuple[int, ...]:
        """The seeds a model is trained with: ``seeds``, or ``(seed,)`` when empty."""
        return self.seeds or (self.seed,)


@dataclass(frozen=True)
class PhantomConfig:
    """Synthetic H&E phantom (see ``histoxai.data.phantom``).

    ``geometry`` sets the voxel size and the shared tissue-parameter ranges (``demo``:
    64 um voxels; ``micromen``: MICROMEN's 200 um voxels and meningioma nuclei, see
    ``phantom_profile.GEOMETRIES``). ``um_per_px`` is the rendering resolution; 0 renders
    straight at ``data.patch_size_px`` per voxel, another value renders at it (e.g. 0.5,
    MICROMEN's H&E) and resizes to the patch size. ``tissue_overlap``: share of the
    geometry's tissue-parameter span each sample covers (1: all samples alike in tissue;
    stain, blur and noise always differ). ``smoothness_vox``: correlation length of the
    tissue maps. ``target_smoothing_vox``: Gaussian sigma (voxels) applied to the MD/FA
    tensor maps, as MR's point-spread (0: none). ``distractor_density``: expected share of
    the canvas covered by red-cell clusters and debris before they are kept to stroma.
    ``shortcut_strength``: largest relative darkening of the MD-correlated border line
    drawn when ``shortcut`` is on.
    """

    n_samples: int = bounded(12, ge=1)
    grid_vox: tuple[int, int] = bounded((14, 14), ge=1)
    geometry: Literal["demo", "micromen"] = "demo"
    um_per_px: float = bounded(0.0, ge=0)
    tissue_overlap: float = bounded(0.7, gt=0, le=1)
    noise_sd_md: float = bounded(0.02, ge=0)
    noise_sd_fa: float = bounded(0.02, ge=0)
    smoothness_vox: float = bounded(3.0, gt=0)
    target_smoothing_vox: float = bounded(0.0, ge=0)
    distractors: bool = True
    distractor_density: float = bounded(0.12, ge=0, le=1)
    shortcut: bool = False
    shortcut_strength: float = bounded(0.15, ge=0, le=1)


@dataclass(frozen=True)
class MicromenConfig:
    """Real MICROMEN data laid out as ``<root>/<n>/coreg_fine/ver1/{HE,HE_mask,MR}.mat``.

    See ``histoxai.data.micromen``. ``samples``: sample numbers (empty: every numeric
    folder under ``root``). ``erosion_vox``: side k of the square that erodes the ROI
    (MATLAB ``strel('square', k)``; the published analysis used 5; 0 or 1: none).
    ``strip_rows_px``: HE is read in tiles of at most this many rows and columns,
    aligned to MR blocks, so memory does not grow with slide size. ``allow_he_remainder``:
    ignore HE rows/columns beyond a whole number of MR blocks (else an error).
    ``cc_source``: ``auto`` uses a QuPath export (first of ``qupath_files`` found in
    ``<root>/<n>/``) and else the classical nuclei detector; ``none`` leaves ``cc`` NaN.
    """

    root: str = ""
    samples: tuple[int, ...] = ()
    erosion_vox: int = bounded(0, ge=0)
    on_bad_sample: Literal["error", "skip"] = "error"
    strip_rows_px: int = bounded(4096, ge=1)
    allow_he_remainder: bool = False
    he_um_per_px: float = bounded(0.5, gt=0)
    cc_source: Literal["auto", "qupath", "detector", "none"] = "auto"
    qupath_files: tuple[str, ...] = ("qupath_detections.tsv", "cell_density/QuPath/measurements.tsv")


@dataclass(frozen=True)
class SplitConfig:
    """Split schemes; all are recorded in the index, ``scheme`` is the one trained on.

    ``random`` and ``spatial_block`` split the patches of all samples but
    ``holdout_samples`` (which become ``out``) by ``fractions`` (train, val, test);
    with ``in_samples`` set, only those samples are split and all others are ``out``;
    ``spatial_block`` keeps square blocks of ``block_vox`` voxels together.
    ``leave_sample_out`` trains on ``train_samples`` (val drawn from them) and tests on
    all others.
    """

    scheme: Literal["random", "spatial_block", "leave_sample_out"] = "random"
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    block_vox: int = bounded(4, ge=1)
    holdout_samples: tuple[str, ...] = ()
    train_samples: tuple[str, ...] = ()
    # thesis (issue 12): random / spatial_block split only these samples; every other
    # sample is ``out`` (empty: all samples but holdout_samples). The thesis: [s3, s4].
    in_samples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        fractions = list(self.fractions)
        if any(not 0 <= f <= 1 for f in fractions):
            raise ConfigError(f"data.split.fractions={fractions}: expected each fraction in [0, 1]")
        if abs(sum(fractions) - 1) > 1e-6:
            raise ConfigError(f"data.split.fractions={fractions}: expected (train, val, test) summing to 1")


@dataclass(frozen=True)
class DataConfig:
    source: Literal["phantom", "micromen"] = "phantom"
    patch_size_px: int = bounded(128, ge=8)
    phantom: PhantomConfig = PhantomConfig()
    micromen: MicromenConfig = MicromenConfig()
    split: SplitConfig = SplitConfig()


@dataclass(frozen=True)
class ModelConfig:
    """The regressor (see ``histoxai.models``): timm backbone, dense neck, one head per target.

    The default backbone, timm's 0.4 M-parameter ``test_resnet`` trained from scratch, learnt
    the phantom best per second on a 2-core CPU at 64 px (as well as ``resnet10t`` at 5x its
    speed; MobileNetV3, RegNetX, LCNet and EfficientNet-B0 learnt less or slower).
    ``targets`` are predicted together (multi-task) and standardised inside the model;
    ``loss_weights`` maps a target to its weight in the loss (missing targets: 1).
    ``pretrained`` loads timm weights from ``pretrained_file`` or the offline Hugging Face
    / torch hub cache, never from the network.
    """

    backbone: str = "test_resnet"
    targets: tuple[str, ...] = ("md", "fa")
    pretrained: bool = False
    pretrained_file: str = ""
    dropout: float = bounded(0.1, ge=0, le=1)
    hidden_width: int = bounded(256, ge=1)
    feature_width: int = bounded(64, ge=1)
    loss_weights: dict[str, float] = field(default_factory=dict)
    registered_name: str = "histoxai-mdfa"
    # thesis (issue 12): activation after the neck's and each head's hidden Dense layer;
    # ``linear`` = none, as Table 3.1 of the thesis (Lank 2024).
    head_activation: Literal["relu", "linear"] = "relu"
    # issue 10: CAM resolution. The patch is resized by input_scale before the backbone and
    # output_stride > 0 is timm's (the last stages dilate instead of downsampling), so the
    # last stage of test_resnet at 128 px is 4x4 by default and 32x32 with 2 and 8.
    input_scale: float = bounded(1.0, gt=0, le=4)
    output_stride: Literal[0, 8, 16, 32] = 0

    def __post_init__(self) -> None:
        known = ("md", "fa", "faip", "cc")  # histoxai.data.store.TARGETS
        if not self.targets:
            raise ConfigError(f"model.targets=[]: expected at least one of {list(known)}")
        for t in self.targets:
            if t not in known:
                raise ConfigError(f"model.targets: unknown target {t!r}; expected some of {list(known)}")
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"model.targets={list(self.targets)}: a target appears twice")
        for t, w in self.loss_weights.items():
            if t not in self.targets:
                raise ConfigError(
                    f"model.loss_weights.{t}: {t!r} is not trained; model.targets={list(self.targets)}"
                )
            if not w > 0:
                raise ConfigError(f"model.loss_weights.{t}={w!r}: expected a value > 0")
        if not self.registered_name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(
                f"model.registered_name={self.registered_name!r}: expected letters, digits, '-', '_' or '.'"
            )
        if self.pretrained_file and not self.pretrained:
            raise ConfigError(
                "model.pretrained_file is set but model.pretrained is false; set model.pretrained=true"
            )


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentations, applied to whole batches (``histoxai.training.augment``).

    ``small_rotation_deg``: rotation by U(-deg, deg) with reflected borders (0: off).
    ``stain_jitter``: sigma of the H&E(D) colour jitter of Tellez et al. 2018 (0: off).
    ``blur_sigma_px``: Gaussian blur of sigma U(0, blur_sigma_px) px per image (0: off);
    blur, not colour, is the appearance shift between slides that breaks transfer.
    """

    flips: bool = True
    rot90: bool = True
    small_rotation_deg: float = bounded(0.0, ge=0, le=10)
    stain_jitter: float = bounded(0.0, ge=0, le=1)
    blur_sigma_px: float = bounded(0.0, ge=0, le=5)


@dataclass(frozen=True)
class TrainConfig:
    """The fit loop (``histoxai.training.fit``).

    Phase 1 trains the heads on a frozen backbone at constant ``lr`` for at most
    ``frozen_epochs`` (0: skip); phase 2 fine-tunes everything for at most ``epochs``
    with ``schedule`` (``none``: constant ``lr``; ``cosine``: linear warmup from
    ``initial_lr`` to ``warmup_target_lr`` over ``warmup_epochs``, then cosine decay to 0
    over ``decay_epochs``). Both phases stop early after ``patience`` epochs without a
    lower validation loss, but fine-tuning never before ``min_epochs`` (0: the length of
    the schedule, ``warmup_epochs + decay_epochs`` capped at ``epochs`` for ``cosine``,
    so early stopping never cuts a decay short); the best checkpoint is kept. A
    non-finite training loss or validation metric stops the fit with
    ``histoxai.training.fit.NonFiniteTrainingError``. ``num_workers``: background
    threads gathering batches (0: in the training thread). ``threads``: CPU threads for
    torch during the fit (0: torch's default; 1 is much faster on a CPU shared with other
    busy processes). ``precision: auto`` is bf16 (or fp16 without bf16 support) on CUDA,
    bf16 on a CPU with native bf16 (AVX512-BF16/AMX), else fp32 (``training.runtime``).
    ``decorrelation``: weight of a penalty on the correlation, over each batch, between the
    pooled channels of every backbone stage (0: off; ``training.fit.stage_decorrelation``).
    """

    epochs: int = bounded(40, ge=1)
    frozen_epochs: int = bounded(0, ge=0)
    patience: int = bounded(10, ge=1)
    min_epochs: int = bounded(0, ge=0)
    batch_size: int = bounded(64, ge=1)
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = bounded(1e-3, gt=0)
    weight_decay: float = bounded(0.008, ge=0)
    schedule: Literal["none", "cosine"] = "cosine"
    warmup_epochs: int = bounded(1, ge=0)
    decay_epochs: int = bounded(39, ge=0)
    initial_lr: float = bounded(1e-4, gt=0)
    warmup_target_lr: float = bounded(3e-3, gt=0)
    decorrelation: float = bounded(0.0, ge=0)
    augment: AugmentConfig = AugmentConfig()
    stain_normalize: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = bounded(0, ge=0)
    threads: int = bounded(0, ge=0)
    experiment: str = "histoxai"


@dataclass(frozen=True)
class TuneConfig:
    """Optuna study (see ``tuning``).

    ``storage``: empty for a journal file ``<dir>/<study_name>.journal`` (safe for several
    worker processes on one machine), or an RDB URL (``sqlite:///...``,
    ``postgresql://user:pw@host/db``) that workers on several machines share.
    ``n_trials`` counts finished trials across all workers. ``heartbeat_s`` /
    ``grace_s`` / ``max_retry``: RDB storages fail a trial whose worker stopped sending
    heartbeats for ``grace_s`` seconds and retry its params up to ``max_retry`` times.
    ``prune_startup_trials`` / ``prune_warmup_epochs``: the median pruner waits for that many
    finished trials and epochs. ``experiment``: MLflow experiment (empty: ``train.experiment``).
    ``register``: register the best trial's model with alias ``champion`` at the end.
    ``trainer``: ``module:function`` that trains one trial (see ``histoxai.tuning.objective.TrainFn``).
    """

    space: str = "tuning/spaces/light-mdfa.yaml"
    study_name: str = "histoxai-mdfa"
    n_trials: int = bounded(20, ge=1)
    storage: str = ""
    dir: str = "optuna"
    sampler: Literal["tpe", "random", "cmaes"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    prune_startup_trials: int = bounded(2, ge=0)
    prune_warmup_epochs: int = bounded(0, ge=0)
    workers: int = bounded(1, ge=1)
    heartbeat_s: int = bounded(30, ge=1)
    grace_s: int = bounded(120, ge=1)
    max_retry: int = bounded(2, ge=0)
    experiment: str = ""
    register: bool = True
    trainer: str = "histoxai.tuning.training:train_trial"

    def __post_init__(self) -> None:
        if "://" in self.storage:
            check_storage_url(self.storage, "tune.storage")


def check_storage_url(url: str, key: str) -> None:
    """Raise ConfigError unless ``url`` is an RDB URL whose SQLAlchemy dialect and driver are
    installed (``mysql://`` without a MySQL driver fails here, not after the study started)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        raise ConfigError(f"{key}={_redact(url)!r}: not a database URL SQLAlchemy knows ({err})") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        name = parsed.get_backend_name()
        usable = [f"{name}+{driver}://" for driver, module in _DRIVERS.get(name, ()) if _installed(module)]
        hint = f"use {' or '.join(usable)}" if usable else "install a driver for it or use sqlite:///FILE"
        raise ConfigError(
            f"{key}={_redact(url)!r}: the {parsed.drivername!r} database driver is not installed "
            f"({err}); {hint}"
        ) from None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a missing parent package
        return False


_DRIVERS = {  # SQLAlchemy driver name -> module, for the hint above
    "postgresql": (("psycopg2", "psycopg2"), ("psycopg", "psycopg"), ("pg8000", "pg8000")),
    "mysql": (("pymysql", "pymysql"), ("mysqldb", "MySQLdb"), ("mysqlconnector", "mysql.connector")),
}


def _redact(url: str) -> str:
    head, sep, tail = url.partition("@")
    return url if not sep or "://" not in head else head.split("://")[0] + "://***@" + tail


@dataclass(frozen=True)
class EvaluateConfig:
    """Regression report and the classical baseline (see ``histoxai.evaluation``).

    The baseline is a polynomial of degree ``baseline_degree`` in nuclei density and
    structure-tensor coherence; ``density_source`` ``auto`` counts nuclei with the
    classical detector when available, else uses the store's ``cc``.
    """

    baseline: bool = True
    baseline_degree: int = bounded(2, ge=1, le=5)
    structure_sigma_px: float = bounded(1.0, gt=0)
    channel: Literal["gray", "haematoxylin"] = "gray"
    density_source: Literal["auto", "detector", "cc"] = "auto"


@dataclass(frozen=True)
class VariantConfig:
    """A saliency method under a name with its parameters (``histoxai.explain.methods``).

    ``method`` empty: same as ``name``. Parameters left out take the method's defaults;
    numbers, booleans, strings and lists (e.g. ``layers: [-3, -2, -1]``) are accepted
    here and checked against the method's defaults when the stage runs.
    """

    name: str = ""
    method: str = ""
    params: dict[str, int | float | bool | str | tuple[int | str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ExplainConfig:
    """Saliency maps of a registered model (``histoxai explain``).

    ``methods``: variants, each a method name (its defaults) or
    ``{name, method, params}``. ``targets`` empty: every head of the model.
    ``output_dir`` empty: ``base.saliency_dir``/<registered model name>.
    ``model_dir`` (a ``histoxai train`` output: ``model.pt`` + ``run.json``) wins over
    ``model_uri`` when set; ``study`` (a ``histoxai tune`` ``summary.json``) wins over both
    when it names a registered champion (the tune pipeline: pipelines/tune/dvc.yaml).
    ``precision`` auto: bf16 autocast on CUDA, fp32 on CPU. ``chunk_size``: patches
    per completion record (a multiple of ``batch_size``), the most a killed run redoes.
    """

    model_uri: str = "models:/histoxai-mdfa@champion"
    model_dir: str = ""
    study: str = ""
    split: Literal["train", "val", "test", "out", "all"] = "test"
    methods: tuple[VariantConfig | str, ...] = (
        "gradcampp",
        "layercam",
        VariantConfig("smoothgrad_s0.2", "smoothgrad", {"sigma": 0.2, "n": 30}),
        VariantConfig("smoothgrad_s0.3", "smoothgrad", {"sigma": 0.3, "n": 30}),
    )
    score: Literal["higher", "lower", "target"] = "higher"
    targets: tuple[str, ...] = ()
    batch_size: int = bounded(32, ge=1)
    chunk_size: int = bounded(256, ge=1)
    max_patches: int = bounded(0, ge=0)
    output_dir: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"

    def __post_init__(self) -> None:
        for i, entry in enumerate(self.methods):
            if isinstance(entry, VariantConfig):
                check_variant_params(entry, f"explain.methods[{i}]")


VARIANT_PARAM_BOUNDS: dict[str, dict[str, tuple[str, float]]] = {
    "smoothgrad": {"n": (">=", 1), "sigma": (">", 0), "noise_batch": (">=", 0)},
    "integrated_gradients": {"steps": (">=", 1), "step_batch": (">=", 0)},
    "occlusion": {"window": (">=", 1), "stride": (">=", 1), "window_batch": (">=", 0)},
}
"""Ranges of the numeric parameters of ``histoxai.explain.methods`` (checked at load)."""


def check_variant_params(variant: VariantConfig, key: str) -> None:
    """Raise ConfigError when a numeric method parameter lies outside its range."""
    bounds = VARIANT_PARAM_BOUNDS.get(variant.method or variant.name, {})
    for name, value in variant.params.items():
        if name not in bounds or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        op, limit = bounds[name]
        if not (value >= limit if op == ">=" else value > limit):
            raise ConfigError(f"{key}.params.{name}={value!r}: expected a value {op} {limit}")


@dataclass(frozen=True)
class XaiEvalConfig:
    """Measuring the saliency maps (``histoxai xai-eval``, ``histoxai.xai_eval``).

    ``saliency_dir`` empty: ``explain.output_dir`` or ``base.saliency_dir``/<registered
    model name of ``explain.model_uri``>; ``output_dir`` empty:
    ``base.reports_dir``/xai_eval/<that directory's name>. ``max_patches`` 0: every
    explained patch is scored (a seeded subset otherwise, the CPU cap).

    Relevance is the signed map, positive for score ``higher`` (negated for ``lower``);
    ``magnitude_variants`` adds each variant's |map| as an extra row ``<variant>|abs``.
    ``steps``: perturbation fractions of the deletion/insertion/ROAD curves;
    ``baseline``: what deleted pixels become (``blur``: Gaussian blur of
    ``blur_sigma_px``; ``mean``: mean colour). Sanity (cascading randomisation, Spearman
    and SSIM of |map| per block; a method passes when every block's mean rho is below
    ``sanity_threshold``, on each of ``sanity_draws`` independent re-initialisations)
    and robustness (max-sensitivity over ``robustness_draws``
    uniform perturbations of radius ``robustness_radius``) re-explain
    ``sanity_patches``/``robustness_patches`` patches stratified over samples (0: skip).
    ``bootstrap`` cluster resamples of samples give every interval (``confidence``);
    ``normalised_bar``: the oracle-normalised localisation a method must reach to be
    named. ``intervention_patches``: patches re-rendered without one object at a time
    (``histoxai.data.phantom_truth.ablate``; 0: skip), at most
    ``intervention_objects`` objects of each kind per patch (0: all). ``shortcut`` auto: report the
    border band when the store has a non-zero ``shortcut_cue`` column.
    ``nuclei_threshold`` 0: Otsu on the haematoxylin channel (tissue classes of stores
    without masks).
    """

    max_patches: int = bounded(0, ge=0)
    steps: int = bounded(10, ge=2)
    baseline: Literal["blur", "mean"] = "blur"
    blur_sigma_px: float = bounded(5.0, gt=0)
    road_noise_sd: float = bounded(0.01, ge=0)
    batch_size: int = bounded(32, ge=1)
    magnitude_variants: bool = False
    sanity_patches: int = bounded(16, ge=0)
    sanity_threshold: float = bounded(0.5, gt=0, le=1)
    sanity_draws: int = bounded(5, ge=1)
    robustness_patches: int = bounded(8, ge=0)
    robustness_draws: int = bounded(50, ge=1)
    robustness_radius: float = bounded(0.02, gt=0)
    bootstrap: int = bounded(1000, ge=10)
    confidence: float = bounded(0.95, gt=0, le=1)
    normalised_bar: float = bounded(0.5, gt=0, le=1)
    intervention_patches: int = bounded(16, ge=0)
    intervention_objects: int = bounded(8, ge=0)
    n_bins: int = bounded(4, ge=1)
    shortcut: Literal["auto", "on", "off"] = "auto"
    shortcut_band_px: int = bounded(2, ge=1)
    nuclei_threshold: float = bounded(0.0, ge=0)
    air_brightness: float = bounded(0.85, gt=0, le=1)
    saliency_dir: str = ""
    output_dir: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class DashboardConfig:
    """The Dash dashboard (``histoxai dashboard``, package ``dashboard``).

    ``patches_dir`` empty: ``base.patches_dir``; ``saliency_dirs`` empty: every
    subdirectory of ``base.saliency_dir``. Login is on when users are given (env
    ``HISTOXAI_DASH_USERS=user:hash,...`` or ``users_file``, one ``user:hash`` a line;
    hashes from ``histoxai dashboard --hash-password``). Serving on a non-loopback
    ``host`` without login is refused unless ``insecure_public``. ``cache_size``: rendered
    image sheets (one page's patches, overlays or outlines each) kept in memory per kind.

    Serving: requests whose Host header is not a loopback name or in ``allowed_hosts``
    are refused (DNS rebinding); ``*`` allows any. ``server``: ``auto`` serves loopback
    addresses with Flask's server and any other with waitress (``threads`` threads),
    behind a TLS proxy. Login: sessions expire after ``session_hours`` and are revoked
    server-side at logout; ``login_attempts`` failures within ``lockout_s`` seconds lock
    the user name and the client address for ``lockout_s`` seconds.
    """

    host: str = "127.0.0.1"
    port: int = bounded(8050, ge=1, le=65535)
    page_size: int = bounded(48, ge=1, le=480)
    patches_dir: str = ""
    saliency_dirs: tuple[str, ...] = ()
    users_file: str = ""
    insecure_public: bool = False
    cache_size: int = bounded(64, ge=0)
    allowed_hosts: tuple[str, ...] = ()
    server: Literal["auto", "flask", "waitress"] = "auto"
    threads: int = bounded(8, ge=1, le=256)
    session_hours: float = bounded(12.0, gt=0.0)
    login_attempts: int = bounded(5, ge=1)
    lockout_s: int = bounded(300, ge=1)


def port_number(text: str) -> int:
    """A TCP port from a command-line flag (argparse ``type``): an integer in 1..65535."""
    import argparse

    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer port 1..65535") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port}: expected a port 1..65535")
    return port


def positive_int(text: str) -> int:
    """An integer >= 1 from a command-line flag (argparse ``type``)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= 1")
    return value


@dataclass(frozen=True)
class FiguresConfig:
    """The thesis' figures and tables (``histoxai figures``, ``histoxai.evaluation.figures``).

    Figure grids: ``n_patches`` random patches of ``split`` (seeded by ``base.seed``) ×
    method variant × target, maps drawn over the patch with ``alpha`` in colour map
    ``cmap`` (per-map min–max display scaling), as PNG and PDF. ``methods``/``targets``
    empty: all in the saliency store. ``saliency_dir`` empty: ``explain.output_dir`` or
    ``base.saliency_dir``/<registered model name>; ``output_dir`` empty:
    ``base.reports_dir``/figures/<that directory's name>. ``summary_mat``: the MICROMEN
    per-voxel ``summary.mat`` for the per-voxel baseline (``histoxai baseline``).
    """

    n_patches: int = bounded(12, ge=1)
    split: Literal["train", "val", "test", "out", "all"] = "test"
    alpha: float = bounded(0.6, ge=0, le=1)
    cmap: str = "viridis"
    methods: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    saliency_dir: str = ""
    output_dir: str = ""
    dpi: int = bounded(150, ge=10)
    summary_mat: str = "../shared/data/micromen/summary.mat"
    baseline_sigma_vox: float = bounded(0.5, ge=0)


@dataclass(frozen=True)
class Config:
    base: BaseConfig = BaseConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    explain: ExplainConfig = ExplainConfig()
    xai_eval: XaiEvalConfig = XaiEvalConfig()
    dashboard: DashboardConfig = DashboardConfig()
    figures: FiguresConfig = FiguresConfig()


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = "params.yaml", overrides: typing.Sequence[str] = ()) -> Config:
    """Parse and validate ``path`` (None: defaults only) with ``key=value`` overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"params file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {_one_line(err)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        _apply_override(raw, item)
    where = f" (in {path})" if path is not None else ""
    try:
        return parse(Config, raw)
    except ConfigError as err:
        raise ConfigError(f"{err}{where}") from None


def parse(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, validating every key against its type."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown key {key!r}; expected one of {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        values[name] = _coerce(hints[name], value, key)
        _check_range(fields[name], values[name], key)
    return cls(**values)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r}: expected one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r}: expected a finite number")
        if isinstance(value, dict):  # a mapping can only be the dataclass arm: keep its error
            for arg in args:
                if dataclasses.is_dataclass(arg):
                    return parse(arg, value, key)
        for arg in args:
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r}: expected {tp}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}={value!r}: expected a list of {len(args)} values")
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping")
        return {_coerce(args[0], k, key): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        value = yaml_number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: expected a number")
        if not math.isfinite(value):  # NaN passes every range check; inf trains to nonsense
            raise ConfigError(f"{key}={value!r}: expected a finite number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return value
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise ConfigError(f"{key}={value!r}: expected {tp.__name__}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp}")


def _check_range(f: dataclasses.Field, value: Any, key: str) -> None:
    ge, gt, le = (f.metadata.get(k) for k in ("ge", "gt", "le"))
    for v in value if isinstance(value, tuple) else (value,):
        if ge is not None and v < ge or gt is not None and v <= gt or le is not None and v > le:
            bounds = " and ".join(
                s
                for s in (
                    ge is not None and f">= {ge}",
                    gt is not None and f"> {gt}",
                    le is not None and f"<= {le}",
                )
                if s
            )
            raise ConfigError(f"{key}={value!r}: expected a value {bounds}")


def _apply_override(raw: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=3e-5")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {key}: {text!r} is not a valid YAML value: {_one_line(err)}") from None
    set_dotted(raw, key.strip(), value)


def _one_line(err: Exception) -> str:
    """A YAML error (several lines, with a caret drawing) as one line."""
    return " ".join(str(err).split())


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set dotted ``key`` (``train.lr``) in the nested mapping ``raw``, creating sections."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part!r} is not a section")
    node[parts[-1]] = list(value) if isinstance(value, tuple) else value


def apply_overrides(cfg: Config, values: typing.Mapping[str, Any]) -> Config:
    """A copy of ``cfg`` with dotted ``values`` set (``{"train.lr": 3e-5}``), validated
    like the params file."""
    raw = to_dict(cfg)
    for key, value in values.items():
        set_dotted(raw, key, value)
    return parse(Config, raw)


def field_type(key: str) -> Any:
    """The type annotation of dotted config ``key`` (the schema walk).

    Raises:
        ConfigError: ``key`` names no field, passes through a non-section, or is a section.
    """
    cls: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(cls)}
        if part not in names:
            prefix = ".".join(parts[:i]) or "config"
            raise ConfigError(
                f"unknown config key {key!r}: {prefix} has no field {part!r}; expected one of {sorted(names)}"
            )
        tp = typing.get_type_hints(cls)[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"unknown config key {key!r}: {'.'.join(parts[: i + 1])} is not a section")
            cls = tp
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"config key {key!r} is a section; name one of its fields")
    return tp


def yaml_number(value: Any) -> Any:
    """``value`` as a float when it is a string PyYAML failed to read as one (YAML 1.1
    reads ``3e-5``, without a dot, as a string); anything else unchanged."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (lists for tuples), e.g. for ``config.yaml``."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(v: Any) -> Any:
    # Recursive, so tuples of dataclasses (``explain.methods``) and tuples inside dicts
    # become plain YAML-safe values too.
    if dataclasses.is_dataclass(v):
        return to_dict(v)
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flat dotted params (``train.lr``), the names ``dvc params diff`` shows."""
    out: dict[str, Any] = {}
    for k, v in (to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text (round-trips through :func:`parse`)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
