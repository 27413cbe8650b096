"""Search spaces as data: a YAML file mapping dotted config keys to distributions.

A space file (``tuning/spaces/light-mdfa.yaml``)::

    objective:                      # optional; default: mean validation R2 over targets
      weights: {md: 0.5, fa: 0.5}
    fixed:                          # overrides applied to every trial
      model.targets: [md, fa]
    params:                         # one entry per dimension, sampled in this order
      train.lr: {type: float, low: 1.0e-5, high: 1.0e-4, log: true}
      train.schedule: {type: categorical, choices: [none, cosine]}
      train.warmup_epochs: {type: int, low: 0, high: 2, when: {train.schedule: cosine}}
    enqueue:                        # optional first trials (partial params allowed)
      - {model.backbone: resnet10t}

Every key must name a config field (``histoxai.config``), every bound and choice must be
a valid value for it, and ``when`` conditions may only refer to keys sampled earlier or
to fixed config values. Mistakes are :class:`SpaceError` naming the file and the key.
Adding a dimension is one line of YAML.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from histoxai.config import Config, ConfigError, apply_overrides, field_type, flatten, yaml_number


class SpaceError(ConfigError):
    """A search-space file is malformed or names an invalid key or value."""


@dataclass(frozen=True)
class Dimension:
    """One sampled config key.

    Attributes:
        key: dotted config key, also the Optuna parameter name (``train.lr``).
        kind: ``float``, ``int`` or ``categorical``.
        spec: the remaining keyword arguments of the matching ``trial.suggest_*``.
        when: conditions ``{key: value or [values]}``; the dimension is sampled only if all hold.
    """

    key: str
    kind: str
    spec: dict[str, Any]
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample this dimension from ``trial``."""
        return SUGGEST[self.kind](trial, self.key, **self.spec)

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether every ``when`` condition holds for ``values`` (dotted key -> value)."""
        return all(values.get(k) in allowed for k, allowed in self.when.items())


@dataclass(frozen=True)
class Space:
    """A parsed search space.

    Attributes:
        path: the YAML file it came from (for messages and the MLflow parent run).
        dimensions: sampled keys in file order.
        fixed: dotted overrides applied to every trial before sampling.
        weights: objective weights per target (empty: mean over the model's targets).
        enqueue: partial parameter sets to try first.
    """

    path: Path
    dimensions: tuple[Dimension, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    enqueue: tuple[dict[str, Any], ...] = ()


SUGGEST: dict[str, Callable[..., Any]] = {
    "float": lambda trial, name, **kw: trial.suggest_float(name, **kw),
    "int": lambda trial, name, **kw: trial.suggest_int(name, **kw),
    "categorical": lambda trial, name, **kw: trial.suggest_categorical(name, **kw),
}
_SPEC_KEYS = {
    "float": {"low", "high", "log", "step"},
    "int": {"low", "high", "log", "step"},
    "categorical": {"choices"},
}
_TOP_KEYS = {"params", "fixed", "objective", "enqueue"}


# --------------------------------------------------------------------------- loading


def load_space(path: str | Path, base: Config | None = None) -> Space:
    """Parse and validate a space file against the config schema.

    Args:
        path: YAML space file.
        base: the config trials start from (defaults when None); used to check values
            and ``when`` conditions on keys that are not sampled.

    Returns:
        The parsed :class:`Space`.

    Raises:
        SpaceError: naming ``path`` and the offending key.
    """
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"search space {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SpaceError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping with {sorted(_TOP_KEYS)}, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise SpaceError(f"{path}: unknown section {unknown[0]!r}; expected one of {sorted(_TOP_KEYS)}")
    base = base or Config()

    fixed = _mapping(raw.get("fixed"), path, "fixed")
    for key, value in fixed.items():
        _check_value(base, key, value, path, "fixed")
    try:
        start = apply_overrides(base, fixed)
    except ConfigError as err:
        raise SpaceError(f"{path}: fixed: {err}") from None

    params = _mapping(raw.get("params"), path, "params")
    if not params:
        raise SpaceError(f"{path}: 'params' must list at least one dimension")
    dims: list[Dimension] = []
    for key, spec in params.items():
        dims.append(_dimension(key, spec, start, path, [d.key for d in dims], set(params)))

    weights = _weights(raw.get("objective"), path, start)
    enqueue = _enqueue(raw.get("enqueue"), path, {d.key: d for d in dims})
    return Space(path, tuple(dims), fixed, weights, enqueue)


def _mapping(value: Any, path: Path, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpaceError(f"{path}: {where!r} must be a mapping, got {value!r}")
    return value


def _dimension(
    key: Any, spec: Any, base: Config, path: Path, earlier: list[str], sampled: set[str]
) -> Dimension:
    where = f"{path}: params.{key}"
    if not isinstance(key, str):
        raise SpaceError(f"{where}: keys must be dotted config names like train.lr")
    config_field(key, path)
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpaceError(f"{where}: expected a mapping with 'type' (one of {sorted(SUGGEST)}), got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("type")
    when = _conditions(spec.pop("when", None), base, path, key, earlier, sampled)
    if kind not in SUGGEST:
        raise SpaceError(f"{where}: unknown distribution type {kind!r}; expected one of {sorted(SUGGEST)}")
    extra = sorted(set(spec) - _SPEC_KEYS[kind])
    if extra:
        raise SpaceError(
            f"{where}: unknown field {extra[0]!r} for type {kind}; expected {sorted(_SPEC_KEYS[kind])}"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: 'choices' must be a non-empty list, got {choices!r}")
        bad = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
        if bad:
            raise SpaceError(f"{where}: choices must be scalars (str, number, bool), got {bad[0]!r}")
        for choice in choices:
            _check_value(base, key, choice, path, "params")
        return Dimension(key, kind, {"choices": list(choices)}, when)

    for bound in ("low", "high"):
        if bound not in spec:
            raise SpaceError(f"{where}: missing {bound!r}")
        spec[bound] = _number(spec[bound], kind, f"{where}.{bound}")
    if spec.get("step") is not None:
        spec["step"] = _number(spec["step"], kind, f"{where}.step")
        if spec["step"] <= 0:
            raise SpaceError(f"{where}: step must be > 0, got {spec['step']}")
    log = spec.setdefault("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: log must be true or false, got {log!r}")
    if spec["low"] > spec["high"]:
        raise SpaceError(f"{where}: low ({spec['low']}) > high ({spec['high']})")
    if log and spec["low"] <= 0:
        raise SpaceError(f"{where}: log scale needs low > 0, got {spec['low']}")
    if log and spec.get("step") is not None:
        raise SpaceError(f"{where}: step and log cannot be combined")
    for bound in ("low", "high"):
        _check_value(base, key, spec[bound], path, "params")
    return Dimension(key, kind, spec, when)


def _number(value: Any, kind: str, where: str) -> int | float:
    if kind == "float":
        value = yaml_number(value)
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise SpaceError(f"{where}={value!r}: expected an integer")
    if kind == "float" and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        raise SpaceError(f"{where}={value!r}: expected a finite number")
    return float(value) if kind == "float" else value


def _conditions(
    raw: Any, base: Config, path: Path, key: str, earlier: list[str], sampled: set[str]
) -> dict[str, tuple[Any, ...]]:
    where = f"{path}: params.{key}.when"
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{where}: expected a mapping {{config.key: value}}, got {raw!r}")
    out = {}
    for cond_key, allowed in raw.items():
        config_field(cond_key, path)
        if cond_key == key or (cond_key in sampled and cond_key not in earlier):
            raise SpaceError(f"{where}: condition on {cond_key!r}, which is not sampled before {key!r}")
        allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        for value in allowed:
            _check_value(base, cond_key, value, path, f"params.{key}.when")
        out[cond_key] = allowed
    return out


def _weights(raw: Any, path: Path, base: Config) -> dict[str, float]:
    objective = _mapping(raw, path, "objective")
    extra = sorted(set(objective) - {"weights"})
    if extra:
        raise SpaceError(f"{path}: objective: unknown key {extra[0]!r}; expected 'weights'")
    weights = _mapping(objective.get("weights"), path, "objective.weights")
    out = {}
    for target, w in weights.items():
        if target not in base.model.targets:
            raise SpaceError(
                f"{path}: objective.weights.{target}: not a target of the model; expected one of "
                f"{list(base.model.targets)} (set model.targets under 'fixed' to change them)"
            )
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise SpaceError(f"{path}: objective.weights.{target}={w!r}: expected a number")
        out[target] = float(w)
    return out


def _enqueue(raw: Any, path: Path, dims: dict[str, Dimension]) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
        raise SpaceError(f"{path}: 'enqueue' must be a list of {{config.key: value}} mappings")
    for i, params in enumerate(raw):
        for key, value in params.items():
            if key not in dims:
                raise SpaceError(f"{path}: enqueue[{i}].{key}: not a dimension under 'params'")
            dim = dims[key]
            if dim.kind == "categorical" and value not in dim.spec["choices"]:
                raise SpaceError(
                    f"{path}: enqueue[{i}].{key}={value!r}: expected one of {dim.spec['choices']}"
                )
            if (
                dim.kind != "categorical"
                and not dim.spec["low"] <= _number(value, dim.kind, key) <= dim.spec["high"]
            ):
                raise SpaceError(
                    f"{path}: enqueue[{i}].{key}={value!r}: outside [{dim.spec['low']}, {dim.spec['high']}]"
                )
    return tuple(dict(p) for p in raw)


# --------------------------------------------------------------------------- config keys


def config_field(key: str, path: Path | str = "space") -> Any:
    """The type annotation of dotted config ``key``; SpaceError naming ``path`` if none."""
    try:
        return field_type(key)
    except ConfigError as err:
        raise SpaceError(f"{path}: {err}") from None


def _check_value(base: Config, key: str, value: Any, path: Path, where: str) -> None:
    config_field(key, path)
    try:
        apply_overrides(base, {key: value})
    except ConfigError as err:
        raise SpaceError(f"{path}: {where}.{key}: {err}") from None


# --------------------------------------------------------------------------- sampling


def sample(space: Space, trial: optuna.Trial, base: Config) -> tuple[Config, dict[str, Any]]:
    """Sample every applicable dimension and return the trial's config and its params.

    Raises:
        SpaceError: a sampled combination is rejected by the config schema.
    """
    start = apply_overrides(base, space.fixed)
    flat = _flat(start)
    params: dict[str, Any] = {}
    for dim in space.dimensions:
        if dim.applies({**flat, **params}):
            params[dim.key] = dim.suggest(trial)
    try:
        return apply_overrides(start, params), params
    except ConfigError as err:
        raise SpaceError(f"{space.path}: sampled params {params} are invalid: {err}") from None


def _flat(cfg: Config) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in flatten(cfg).items()}


def objective_weights(space: Space, targets: tuple[str, ...]) -> dict[str, float]:
    """Weights per target: the space's, else equal weights summing to 1 (the mean)."""
    return dict(space.weights) if space.weights else {t: 1.0 / len(targets) for t in targets}
