"""The training configuration: one flat, typed, commented model; defaults = the original recipe.

Two file formats are accepted:

- this project's YAML (or JSON) with the flat keys of `TrainConfig` (see
  `configs/train.example.yaml`);
- the original pipeline's JSON (`audio.feature_params.*`, `audio.model.dropout`,
  `audio.training.*`, `audio.training.sequence_mil.*`), recognised by its top-level `audio`
  key and mapped key by key through the tables below.

Unknown keys are errors that name the key, in both formats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from deploy.backbone import BackboneParams
from deploy.contract import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN
from deploy.errors import WeldmonError
from deploy.frontend_params import FrontEndParams
from deploy.inputs import MAX_CONFIG_BYTES, read_input_text
from deploy.strict_model import StrictModel
from training.augment import AugmentParams


class ConfigError(WeldmonError):
    """A training or sweep configuration cannot be used (unreadable, unknown or invalid key)."""


# The front end's settings a training config sets, by their flat keys (the config files'
# shape); its power floor and normalisation epsilon keep FrontEndParams' fixed values.
FRONT_END_KEYS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min", "f_max")


class TrainConfig(StrictModel):
    """Every knob of a training run. Units in the comments; defaults are the original's."""

    # -- identity: the human-readable name and version the exported artifact carries (events
    # show them beside its sha256); `weldmon export --name/--model-version` override them
    model_name: str | None = Field(None, pattern=MODEL_NAME_PATTERN)
    model_version: str | None = Field(None, pattern=MODEL_VERSION_PATTERN)
    # -- data
    data_root: str | None = None  # dataset root (good_weld/, defect_data_weld/); CLI may override
    split_file: str | None = None  # reuse this split (JSON); None: make one and save it in the run
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # share of config folders held out, per class
    feature_cache_dir: str | None = None  # on-disk log-mel cache shared by runs; None: memory only
    # -- front end (must match what the artifact will contain): units and bounds in
    # FrontEndParams. A config file sets it by the flat keys FRONT_END_KEYS (sample_rate, n_fft,
    # win_length, hop_length, n_mels, f_min, f_max), or as one `front_end:` mapping of them;
    # dumps (checkpoints, run summaries) keep the flat keys.
    front_end: FrontEndParams = FrontEndParams()
    chunk_seconds: float = Field(1.0, gt=0.0)  # s, window length (non-overlapping, from sample 0)
    # -- model
    dropout: float = Field(0.15, ge=0.0, lt=1.0)  # before the final linear layer
    # -- what is judged, and session robustness (docs/training.md has the cv figure of each)
    segmentation: Literal["auto", "current", "crackle", "gate", "file"] = "auto"  # weld boundaries:
    # auto = the sensor CSV's arc current when present, else the daemon's default segmenter;
    # file = the whole recording (the original's training data, idle noise included)
    # CNN channels of the first stage, then x2, x4. 8 (~12k weights), not the original's 32
    # (~186k): the recipe whose leave-one-config-folder-out figure docs/training.md quotes.
    width: int = Field(8, ge=1)
    input_norm: Literal["window", "band"] = "window"  # band: also centre each mel band per window
    backbone_kind: Literal["cnn", "stats"] = "cnn"  # stats: band spread/change + a perceptron
    balance_folders: bool = False  # draw each epoch's bags evenly over config folders
    type_head_weight: float = Field(0.0, ge=0.0)  # weight of an auxiliary defect-type loss; 0 off
    augment_grid_shift: bool = False  # start each weld's window grid at a random offset
    augment_eq_db: float = Field(0.0, ge=0.0)  # max tilt / EQ bump across mel bands (dB); 0 off
    augment_noise_p: float = Field(0.0, ge=0.0, le=1.0)  # chance of added white/pink noise
    augment_snr_min_db: float = 5.0  # its SNR range (dB) ...
    augment_snr_max_db: float = 30.0  # ... up to this
    augment_mix_p: float = Field(0.0, ge=0.0, le=1.0)  # chance of a good weld of another folder
    augment_mix_min_db: float = -20.0  # mixed in at this level relative to the weld (dB) ...
    augment_mix_max_db: float = -6.0  # ... up to this
    augment_reverb_p: float = Field(0.0, ge=0.0, le=1.0)  # chance of a reverberant tail
    specaugment_time: int = Field(0, ge=0)  # widest SpecAugment time mask (frames); 0 off
    specaugment_bands: int = Field(0, ge=0)  # widest SpecAugment band mask (mel bands); 0 off
    cell_reference: bool = False  # cv: add the training folds' good welds as a cell reference
    # to each fold's model (what `weldmon enroll --base` does for a deployed cell)
    cell_false_alarm_rate: float = Field(0.01, gt=0.0, lt=0.5)  # its calibration target
    # -- optimisation
    seed: int = 42  # seeds weights, shuffling and dropout; same seed + data -> same metrics
    # Members of the shipped model (seeds seed, seed+1, ...), each trained with one of K groups
    # of config folders held out; the threshold comes from those out-of-fold weld scores
    # (`training.ensemble`). 1: one model, selected and tuned on val_fraction's folders.
    ensemble: int = Field(5, ge=1)
    epochs: int = Field(20, ge=1)  # maximum epochs (the cv-measured recipe: 20, patience 20)
    batch_size: int = Field(8, ge=1)  # bags (whole recordings) per optimiser step
    lr: float = Field(1e-4, gt=0.0)  # peak learning rate (Adam)
    weight_decay: float = Field(1e-4, ge=0.0)  # Adam's L2 penalty
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # share of all steps with linear warm-up
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)  # lr multiplier when val loss plateaus
    plateau_patience: int = Field(2, ge=0)  # epochs without val-loss improvement before cutting lr
    min_lr: float = Field(1e-6, ge=0.0)  # lr floor of reduce-on-plateau
    patience: int = Field(20, ge=1)  # early stopping: epochs without a better val macro-F1
    grad_clip: float = Field(5.0, gt=0.0)  # max global gradient norm
    num_threads: int | None = Field(None, ge=1)  # torch CPU threads; None: torch's default
    # -- multiple-instance learning
    topk_ratio_pos: float = Field(0.05, gt=0.0, le=1.0)  # top-k share pooled for defect bags
    topk_ratio_neg: float = Field(0.2, gt=0.0, le=1.0)  # top-k share pooled for good bags
    eval_pool_ratio: float = Field(0.05, gt=0.0, le=1.0)  # top-k share at validation and deploy
    good_window_weight: float = Field(0.25, ge=0.0)  # weight of every good window's BCE towards 0
    auto_threshold: bool = True  # tune the decision threshold on validation each epoch
    threshold: float = Field(0.5, ge=0.0, le=1.0)  # used when auto_threshold is off
    threshold_min: float = Field(0.05, gt=0.0, lt=1.0)  # tuning grid start
    threshold_max: float = Field(0.95, gt=0.0, lt=1.0)  # tuning grid end (inclusive)
    threshold_step: float = Field(0.05, gt=0.0, lt=1.0)  # tuning grid step

    @model_validator(mode="before")
    @classmethod
    def _fold_front_end(cls, data: Any) -> Any:
        """The flat front-end keys into `front_end`; a key given both ways, or a front-end
        setting a training config does not set, is an error naming it."""
        if not isinstance(data, dict):
            return data
        nested = data.get("front_end", {})
        if isinstance(nested, FrontEndParams):
            return data
        flat = {key: data[key] for key in FRONT_END_KEYS if key in data}
        if not flat and not nested:
            return data
        if not isinstance(nested, dict):
            raise ValueError("front_end must be a mapping of " + ", ".join(FRONT_END_KEYS))
        twice = sorted(set(flat) & set(nested))
        if twice:
            raise ValueError(f"{twice} given both flat and under front_end")
        fixed = sorted(set(nested) - set(FRONT_END_KEYS))
        if fixed:
            raise ValueError(f"front_end: {fixed} not settable here (one of {FRONT_END_KEYS})")
        rest = {key: value for key, value in data.items() if key not in FRONT_END_KEYS}
        return {**rest, "front_end": {**nested, **flat}}

    @model_serializer(mode="wrap")
    def _flat_front_end(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dumps in the config files' flat shape: checkpoints, run summaries and --resume
        compare and reload them key by key."""
        out: dict[str, Any] = {}
        for key, value in handler(self).items():
            if key == "front_end":
                out.update({name: value[name] for name in FRONT_END_KEYS})
            else:
                out[key] = value
        return out

    @model_validator(mode="after")
    def _check_relations(self) -> TrainConfig:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if self.f_max > self.sample_rate / 2:
            raise ValueError(f"f_max ({self.f_max}) is above Nyquist ({self.sample_rate / 2})")
        if self.threshold_min > self.threshold_max:
            raise ValueError("threshold_min must be <= threshold_max")
        if round(self.chunk_seconds * self.sample_rate) < self.n_fft:
            raise ValueError("chunk_seconds is shorter than one FFT frame")
        if self.chunk_samples % self.hop_length:
            raise ValueError(
                f"chunk_seconds x sample_rate ({self.chunk_samples}) must be a multiple of "
                f"hop_length ({self.hop_length}): windows are sliced from a weld's frames"
            )
        for name in ("augment_snr", "augment_mix"):
            if getattr(self, f"{name}_min_db") > getattr(self, f"{name}_max_db"):
                raise ValueError(f"{name}_min_db must not exceed {name}_max_db")
        return self

    @property
    def chunk_samples(self) -> int:
        return round(self.chunk_seconds * self.sample_rate)

    # The front end's settings by their config keys, read-only: cfg.n_fft is
    # cfg.front_end.n_fft.
    @property
    def sample_rate(self) -> int:
        return self.front_end.sample_rate

    @property
    def n_fft(self) -> int:
        return self.front_end.n_fft

    @property
    def win_length(self) -> int:
        return self.front_end.win_length

    @property
    def hop_length(self) -> int:
        return self.front_end.hop_length

    @property
    def n_mels(self) -> int:
        return self.front_end.n_mels

    @property
    def f_min(self) -> float:
        return self.front_end.f_min

    @property
    def f_max(self) -> float:
        return self.front_end.f_max

    def frontend(self) -> FrontEndParams:
        return self.front_end

    def backbone(self) -> BackboneParams:
        return BackboneParams(
            n_classes=2,
            dropout=self.dropout,
            width=self.width,
            input_norm=self.input_norm,
            kind=self.backbone_kind,
        )

    def augmentation(self) -> AugmentParams:
        return AugmentParams(
            grid_shift=self.augment_grid_shift,
            eq_db=self.augment_eq_db,
            noise_p=self.augment_noise_p,
            snr_db=(self.augment_snr_min_db, self.augment_snr_max_db),
            mix_p=self.augment_mix_p,
            mix_db=(self.augment_mix_min_db, self.augment_mix_max_db),
            reverb_p=self.augment_reverb_p,
            time_mask=self.specaugment_time,
            band_mask=self.specaugment_bands,
        )

    def threshold_grid(self) -> list[float]:
        """The original's 0.05..0.95 grid (inclusive), rounded so 0.35 is 0.35, not 0.35000001."""
        n = round((self.threshold_max - self.threshold_min) / self.threshold_step)
        return [round(self.threshold_min + i * self.threshold_step, 6) for i in range(n + 1)]


# The original pipeline's JSON: section -> {its key: our key}. Keys outside these tables are
# errors. Window and hop were given there in seconds, so they are converted to samples.
ORIGINAL_FEATURE_KEYS = {
    "sample_rate": "sample_rate",
    "sampling_rate": "sample_rate",
    "n_fft": "n_fft",
    "n_mels": "n_mels",
    "f_min": "f_min",
    "fmin": "f_min",
    "f_max": "f_max",
    "fmax": "f_max",
    "win_length": "win_length",
    "hop_length": "hop_length",
    "frame_length_in_s": "win_length_s",
    "frame_step_in_s": "hop_length_s",
    "window_seconds": "win_length_s",
    "hop_seconds": "hop_length_s",
    "chunk_length_in_s": "chunk_seconds",
    "chunk_seconds": "chunk_seconds",
}
ORIGINAL_MODEL_KEYS = {"dropout": "dropout"}
ORIGINAL_TRAINING_KEYS = {
    "seed": "seed",
    "epochs": "epochs",
    "num_epochs": "epochs",
    "lr": "lr",
    "learning_rate": "lr",
    "weight_decay": "weight_decay",
    "patience": "patience",
    "early_stopping_patience": "patience",
    "grad_clip": "grad_clip",
    "max_grad_norm": "grad_clip",
    "warmup_ratio": "warmup_fraction",
    "warmup_fraction": "warmup_fraction",
    "lr_factor": "plateau_factor",
    "plateau_factor": "plateau_factor",
    "lr_patience": "plateau_patience",
    "plateau_patience": "plateau_patience",
    "min_lr": "min_lr",
    "val_fraction": "val_fraction",
    "val_split": "val_fraction",
}
ORIGINAL_MIL_KEYS = {
    "batch_size": "batch_size",
    "topk_ratio_pos": "topk_ratio_pos",
    "topk_ratio_neg": "topk_ratio_neg",
    "eval_pool_ratio": "eval_pool_ratio",
    "auto_threshold": "auto_threshold",
    "threshold": "threshold",
    "good_window_weight": "good_window_weight",
}
# Top-level sections of the original's master config that belong to other modalities: they
# are reported as ignored, never silently dropped.
ORIGINAL_OTHER_SECTIONS = ("video", "sensor", "fusion")


def _map_section(section: Any, table: dict[str, str], where: str, out: dict[str, Any]) -> None:
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(section).__name__}")
    for key, value in section.items():
        if key not in table:
            raise ConfigError(f"unknown key {where}.{key} (accepted: {sorted(table)})")
        out[table[key]] = value


def from_original(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Map the original JSON config to flat keys; returns (flat keys, ignored section names)."""
    ignored = []
    for key in raw:
        if key in ORIGINAL_OTHER_SECTIONS:
            ignored.append(key)
        elif key != "audio":
            raise ConfigError(f"unknown key {key} in the original config (only audio.* is used)")
    audio = raw["audio"]
    if not isinstance(audio, dict):
        raise ConfigError("audio: expected a mapping")
    flat: dict[str, Any] = {}
    for key, section in audio.items():
        if key == "feature_params":
            _map_section(section, ORIGINAL_FEATURE_KEYS, "audio.feature_params", flat)
        elif key == "model":
            _map_section(section, ORIGINAL_MODEL_KEYS, "audio.model", flat)
        elif key == "training":
            if not isinstance(section, dict):
                raise ConfigError("audio.training: expected a mapping")
            plain = {k: v for k, v in section.items() if k != "sequence_mil"}
            _map_section(plain, ORIGINAL_TRAINING_KEYS, "audio.training", flat)
            mil = dict(section.get("sequence_mil", {}))
            if not mil.pop("enabled", True):
                raise ConfigError(
                    "audio.training.sequence_mil.enabled is false: only MIL training exists here"
                )
            _map_section(mil, ORIGINAL_MIL_KEYS, "audio.training.sequence_mil", flat)
        else:
            raise ConfigError(f"unknown key audio.{key}")
    rate = int(flat.get("sample_rate", FrontEndParams().sample_rate))
    for seconds_key, samples_key in (
        ("win_length_s", "win_length"),
        ("hop_length_s", "hop_length"),
    ):
        if seconds_key in flat:
            flat[samples_key] = round(float(flat.pop(seconds_key)) * rate)
    return flat, ignored


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = err["loc"][1:] if err["loc"][:1] == ("front_end",) else err["loc"]  # a flat key
        key = ".".join(str(p) for p in loc) or "config"
        parts.append(f"{key}: {err['msg']}")
    return "; ".join(parts)


def make_config(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate flat keys into a TrainConfig; every problem is listed, each naming its key."""
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from exc


def read_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON file that must hold a mapping."""
    text = read_input_text(Path(path), MAX_CONFIG_BYTES, "", ConfigError)
    try:
        raw = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{path}: not valid {Path(path).suffix.lstrip('.') or 'YAML'}: {exc}"
        ) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a training config (this project's flat YAML/JSON, or the original's JSON)."""
    raw = read_mapping(path)
    if "audio" in raw:
        raw, _ignored = from_original(raw)
    return make_config({**raw, **(overrides or {})}, source=str(path))


def ignored_sections(path: Path) -> list[str]:
    """Sections of an original config that `load_config` ignores (for the run log)."""
    raw = read_mapping(path)
    return from_original(raw)[1] if "audio" in raw else []
