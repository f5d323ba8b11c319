"""Run configuration: frozen dataclasses read strictly from YAML and `section.key=value` overrides.

Each option's help text and constraints sit in its field's metadata, next to its default; one
generic validator (`KeySpec.check`) walks that metadata, so a new option is one line here. A
rule the metadata cannot say sits in its section's `_check` (data.max_size: 0 or >= 3), and
rules across keys in `Config`. This is the one place values are validated: the modules that
use them (`Vocab.build`, `split_ids`, the batch streams) take its values as valid.
"""

import contextlib
import dataclasses
import difflib
import math
import operator
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import yaml

from charlm.errors import ConfigError
from charlm.fileio import write_atomic

SECTIONS = ("model", "data", "train", "sample")
_COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def _key(default: Any, help: str, **rule: Any) -> Any:
    """A field with its help and constraints (choices=(...), ge=, gt=, le=, lt=) as metadata."""
    return field(default=default, metadata={"help": help, **rule})


@dataclass(frozen=True)
class KeySpec:
    """One option: where it lives, its type, default, help and constraints."""

    section: str
    name: str
    type: type
    nullable: bool
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    def bounds(self) -> list[tuple[str, float]]:
        """The numeric limits as (operator, limit) pairs, e.g. [('>=', 0), ('<', 1)]."""
        pairs = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        return [(op, limit) for op, limit in pairs if limit is not None]

    def allowed(self) -> str:
        """The constraint in words ('' when any value of the right type will do)."""
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        return " and ".join(f"{op} {limit:g}" for op, limit in self.bounds())

    def check(self, value: Any) -> Any:
        """`value` normalised (an int becomes a float for a float key) or a ConfigError."""
        if value is None and self.nullable:
            return None
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            with contextlib.suppress(OverflowError):
                value = float(value)
        # bool is an int subclass, but `hidden_size: true` is always a mistake.
        if not isinstance(value, self.type) or (isinstance(value, bool) and self.type is not bool):
            null = " or null" if self.nullable else ""
            raise ConfigError(
                f"{self.key}: expected {self.type.__name__}{null}, got {_show(value)}"
            )
        if self.type is float and not math.isfinite(value):
            raise ConfigError(f"{self.key}: expected a finite number, got {value!r}")
        in_range = all(_COMPARE[op](value, limit) for op, limit in self.bounds())
        if not in_range or (self.choices and value not in self.choices):
            raise ConfigError(f"{self.key}: must be {self.allowed()}, got {value!r}")
        return float(value) if self.type is float else value


class _Section:
    """Base of the section dataclasses: validates and normalises every field on construction."""

    SECTION: ClassVar[str]

    def __post_init__(self) -> None:
        specs = key_specs()
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = specs[f"{self.SECTION}.{f.name}"].check(getattr(self, f.name))
            object.__setattr__(self, f.name, value)  # frozen: the one sanctioned write
        self._check()

    def _check(self) -> None:
        """A key's rule that metadata bounds cannot say (runs after every field is checked)."""


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Network architecture."""

    SECTION: ClassVar[str] = "model"
    cell: str = _key("lstm", "recurrent cell type", choices=("rnn", "gru", "lstm"))
    hidden_size: int = _key(256, "units in each recurrent layer", ge=1)
    num_layers: int = _key(2, "number of stacked recurrent layers", ge=1)
    dropout: float = _key(0.0, "dropout probability on layer outputs while training", ge=0, lt=1)
    embedding_size: int = _key(0, "character embedding width; 0 = one-hot input", ge=0)
    gru_reset_after: bool = _key(False, "GRU: apply the reset gate after the recurrent matmul")
    rnn_activation: str = _key("tanh", "activation of the plain rnn cell", choices=("tanh", "relu"))


@dataclass(frozen=True)
class DataConfig(_Section):
    """Corpus, validation split and vocabulary."""

    SECTION: ClassVar[str] = "data"
    corpus: str = _key("", "training text file, used when a command gets no CORPUS argument")
    mode: str = _key("stream", "stream: one text; lines: a line each", choices=("stream", "lines"))
    val_fraction: float = _key(0.1, "fraction held out for validation (or val_file)", ge=0, lt=1)
    val_file: str = _key("", "separate validation text file; when set val_fraction is ignored")
    val_split: str = _key(
        "auto",
        "which part validates: random = whole lines at random (lines mode), tail = the end of "
        "the text; auto = random in lines mode, tail in stream mode",
        choices=("auto", "tail", "random"),
    )
    split_seed: int = _key(0, "seed of the random validation split", ge=0)
    vocab: str = _key("", "existing vocabulary JSON to use; empty = build one from the corpus")
    min_count: int = _key(1, "characters seen fewer times map to the unknown token", ge=1)
    max_size: int = _key(0, "vocabulary size cap incl. 2 specials: 0 (none) or >= 3", ge=0)

    def _check(self) -> None:
        if 0 < self.max_size < 3:
            raise ConfigError(
                f"data.max_size: must be 0 (no limit) or >= 3 (two special tokens and a "
                f"character), got {self.max_size}"
            )


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Optimisation, schedule, stopping, logging and runtime."""

    SECTION: ClassVar[str] = "train"
    # The global batch: under `mpiexec -n K` each process trains on batch_size / K of the
    # streams (a multiple of K), so a run means the same whatever K is.
    batch_size: int = _key(64, "sequences per batch (all processes together)", ge=1)
    seq_len: int = _key(100, "characters per sequence (truncated BPTT length)", ge=1)
    max_steps: int = _key(5000, "stop after this many steps; 0 = no step limit", ge=0)
    max_epochs: float = _key(0.0, "stop after this many passes over the data; 0 = no limit", ge=0)
    max_seconds: float = _key(0.0, "wall-clock budget in seconds; 0 = no limit", ge=0)
    lr: float = _key(2e-3, "peak learning rate", gt=0)
    optimizer: str = _key("adam", "optimizer", choices=("sgd", "adam", "adagrad", "rmsprop"))
    beta1: float = _key(0.9, "Adam first-moment decay (adam only)", ge=0, lt=1)
    beta2: float = _key(0.999, "Adam / RMSprop second-moment decay", ge=0, lt=1)
    eps: float = _key(1e-8, "optimizer epsilon for numerical stability", gt=0)
    weight_decay: float = _key(
        0.0, "decoupled (AdamW-style) weight decay, every optimizer: p -= lr*wd*p", ge=0
    )
    lr_schedule: str = _key("constant", "lr schedule", choices=("constant", "step", "cosine"))
    warmup_steps: int = _key(0, "linear warm-up steps before the schedule", ge=0)
    lr_decay: float = _key(0.5, "step schedule: lr factor every lr_decay_every steps", gt=0, le=1)
    lr_decay_every: int = _key(1000, "step schedule: steps between decays", ge=1)
    min_lr: float = _key(0.0, "cosine schedule: learning-rate floor", ge=0)
    restart_prob: float = _key(
        0.05,
        "stream mode: chance that a batch row restarts from the zero state at each window, "
        "so the model learns the cold start that sampling and evaluation begin from",
        ge=0,
        le=1,
    )
    clip: float = _key(5.0, "gradient clipping threshold; 0 = off", ge=0)
    clip_kind: str = _key("norm", "clip the global norm or each value", choices=("norm", "value"))
    eval_every: int = _key(500, "steps between validation evaluations", ge=1)
    log_every: int = _key(10, "steps between log lines", ge=1)
    sample_every: int = _key(0, "steps between sample previews; 0 = off", ge=0)
    sample_len: int = _key(200, "characters per preview sample", ge=1)
    checkpoint_every: int = _key(500, "steps between checkpoints", ge=1)
    keep_checkpoints: int = _key(
        0,
        "also keep the N most recent checkpoints by step (step-NNNNNNNN), to sample or "
        "evaluate with --step; 0 = only best and last",
        ge=0,
    )
    patience: int = _key(0, "stop after this many evaluations without improvement; 0 = off", ge=0)
    seed: int = _key(1337, "random seed for initialisation, batching and dropout", ge=0)
    dtype: str = _key("float32", "floating-point precision", choices=("float32", "float64"))
    device: str = _key("cpu", "cpu (NumPy) or cuda (CuPy)", choices=("cpu", "cuda"))
    kernels: str = _key(
        "auto",
        "CPU step kernels: compiled (numba, pip install 'charlm[fast]'), numpy (the readable "
        "reference), auto = compiled when numba is installed and the dtype is float32",
        choices=("auto", "numpy", "compiled"),
    )
    cuda_graphs: bool = _key(
        True,
        "cuda: capture the training step once per batch shape as a CUDA graph and replay it "
        "(one launch a step, not hundreds); false runs the same kernels one launch at a time, "
        "for debugging. No effect on the CPU",
    )
    tf32: bool = _key(
        False,
        "cuda, float32: TF32 tensor-core matrix products (inputs rounded to a 10-bit mantissa, "
        "about 3 decimal digits, sums in float32; PyTorch's cuDNN RNNs use it by default). "
        "No effect on the CPU or in float64",
    )


@dataclass(frozen=True)
class SampleConfig(_Section):
    """Text generation."""

    SECTION: ClassVar[str] = "sample"
    max_len: int = _key(200, "characters to generate per sample", ge=1)
    lines: int = _key(0, "stream mode: end a sample after its N-th line break; 0 = off", ge=0)
    num: int = _key(1, "number of samples", ge=1)
    temperature: float = _key(1.0, "softmax temperature; lower = more conservative", gt=0)
    top_k: int = _key(0, "keep only the k most likely characters; 0 = off", ge=0)
    top_p: float = _key(1.0, "nucleus sampling probability mass; 1 = off", gt=0, le=1)
    greedy: bool = _key(False, "always pick the most likely character")
    seed: int | None = _key(None, "random seed; null = different every run", ge=0)
    no_unk: bool | None = _key(
        None, "never emit the unknown token; null = only if the training text had none"
    )
    prime: str = _key("", "text fed to the model before sampling")


_SECTION_TYPES: Mapping[str, type[_Section]] = types.MappingProxyType(
    {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "sample": SampleConfig}
)


@dataclass(frozen=True)
class Config:
    """A complete, validated configuration (immutable; derive variants with `with_overrides`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        for name, cls in _SECTION_TYPES.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name}: expected a {cls.__name__}")
        # Checks that involve more than one key.
        if self.data.val_split == "random" and self.data.mode != "lines":
            raise ConfigError(
                "data.val_split: random splits whole lines, so it needs data.mode=lines; "
                "a stream validates on its tail"
            )
        t = self.train
        if t.max_steps == 0 and t.max_epochs == 0 and t.max_seconds == 0:
            raise ConfigError(
                "train: set at least one of train.max_steps, train.max_epochs, train.max_seconds"
                " (all are 0, so training would never stop)"
            )


@cache
def key_specs() -> dict[str, KeySpec]:
    """Every option by dotted key, in declaration order (drives validation, docs and tests)."""
    specs = {}
    for section, cls in _SECTION_TYPES.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint, nullable = hints[f.name], False
            if isinstance(hint, types.UnionType):  # `int | None`
                nullable = type(None) in hint.__args__
                (hint,) = [a for a in hint.__args__ if a is not type(None)]
            spec = KeySpec(section, f.name, hint, nullable, f.default, **f.metadata)
            specs[spec.key] = spec
    return specs


def describe_keys() -> list[tuple[str, str, str]]:
    """(dotted key, default as YAML text, help plus constraint) for docs and `--help`."""
    rows = []
    for s in key_specs().values():
        default = repr(s.default)
        if s.default is None or isinstance(s.default, bool):  # as typed in YAML
            default = "null" if s.default is None else str(s.default).lower()
        rows.append((s.key, default, f"{s.help} ({s.allowed()})" if s.allowed() else s.help))
    return rows


def default_config() -> Config:
    """The built-in defaults (what `configs/default.yaml` spells out)."""
    return Config()


def config_from_dict(d: Mapping[str, Any]) -> Config:
    """A validated Config from a nested mapping; missing sections and keys take defaults."""
    return Config(**_build_sections(d))


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dict of `cfg` (round-trips through `config_from_dict`)."""
    return dataclasses.asdict(cfg)


def config_diff(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} for every option that differs, in key order."""
    a, b = config_to_dict(old), config_to_dict(new)
    return {
        f"{section}.{name}": (a[section][name], b[section][name])
        for section in SECTIONS
        for name in a[section]
        if a[section][name] != b[section][name]
    }


def with_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """`cfg` with `section.key=value` overrides applied in order."""
    return Config(**_apply_overrides({s: getattr(cfg, s) for s in SECTIONS}, overrides))


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> Config:
    """Defaults, updated by the YAML file at `path` (if any), then by `overrides`."""
    try:
        sections = _build_sections({} if path is None else _read_yaml(Path(path)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    # Cross-key checks run only after the overrides, which may be what completes the file.
    return Config(**_apply_overrides(sections, overrides))


def dump_config(cfg: Config) -> str:
    """YAML text of `cfg`: the resolved configuration a run saves next to its checkpoints."""
    d = config_to_dict(cfg)
    text = yaml.dump(d, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    # PyYAML writes a few characters (U+0085) raw and reads them back as spaces: escape all.
    if _parse_yaml(text) != d:
        text = yaml.dump(d, Dumper=_Dumper, sort_keys=False)
    return text


def save_config(cfg: Config, path: str | os.PathLike[str]) -> None:
    """Write `dump_config(cfg)` to `path` atomically: readers see the old file or the new one."""
    try:
        write_atomic(path, dump_config(cfg).encode("utf-8"))  # mode 0o644: ordinary output
    except OSError as e:
        raise ConfigError(f"cannot write config to {path}: {e}") from None


class _Loader(yaml.SafeLoader):
    """SafeLoader (never builds Python objects) that also refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        for i, key in enumerate(keys):
            with contextlib.suppress(TypeError):  # an unhashable key: the base class reports it
                if key in keys[:i] and node.value[i][0].tag != "tag:yaml.org,2002:merge":
                    mark = node.value[i][0].start_mark
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", mark
                    )
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings `_Loader` would read as floats (e.g. a corpus named 1e5)."""


# PyYAML follows YAML 1.1, where a float needs a dot: `lr: 1e-3` would be the string "1e-3".
_SCI_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _SCI_FLOAT, list("-+.0123456789"))
_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _SCI_FLOAT, list("-+.0123456789"))


def _parse_yaml(text: str) -> Any:
    """`text` parsed by `_Loader`; errors become ' at line L, column C: problem' ConfigErrors."""
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"invalid YAML{where}: {problem}") from None


def _read_yaml(path: Path) -> Any:
    """Parsed contents of a YAML file ({} when empty); errors are raised without the path."""
    if path.is_dir():
        raise ConfigError("is a directory, not a config file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file: {e}") from None
    data = _parse_yaml(text)
    return {} if data is None else data


def _build_sections(raw: Any) -> dict[str, _Section]:
    """Validated section objects from a nested mapping (cross-key checks come later)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a mapping of sections {SECTIONS}, got {_show(raw)}")
    sections = {name: cls() for name, cls in _SECTION_TYPES.items()}
    for name, body in raw.items():
        if name not in sections:
            raise ConfigError(_unknown(str(name)))
        body = {} if body is None else body  # a section whose keys are all commented out
        if not isinstance(body, Mapping):
            raise ConfigError(f"{name}: expected a mapping of keys, got {_show(body)}")
        for key in body:
            if f"{name}.{key}" not in key_specs():
                raise ConfigError(_unknown(f"{name}.{key}"))
        sections[name] = _SECTION_TYPES[name](**body)
    return sections


def _apply_overrides(
    sections: dict[str, _Section], overrides: Sequence[str]
) -> dict[str, _Section]:
    """`sections` with each `section.key=value` override applied; errors quote the override."""
    sections = dict(sections)
    for text in [overrides] if isinstance(overrides, str) else overrides:
        try:
            key, sep, raw = text.partition("=")
            key = key.strip()
            if not sep and key in key_specs():  # the right key, the value forgotten
                allowed = key_specs()[key].allowed()
                raise ConfigError(
                    f"{key} needs a value: --set {key}=VALUE" + (f" ({allowed})" if allowed else "")
                )
            if not sep or "." not in key:
                hint = _did_you_mean(key) if key else ""
                raise ConfigError(f"expected SECTION.KEY=VALUE, e.g. train.lr=0.01{hint}")
            if key not in key_specs():
                raise ConfigError(_unknown(key))
            spec = key_specs()[key]
            try:
                value = _parse_yaml(raw)
            except ConfigError:
                if spec.type is not str:
                    raise
                value = raw
            # `data.corpus=123` or `sample.prime=yes` mean the text as typed, not a number or bool.
            if spec.type is str and not isinstance(value, str):
                value = raw
            section = sections[spec.section]
            sections[spec.section] = dataclasses.replace(section, **{spec.name: value})
        except ConfigError as e:
            raise ConfigError(f"invalid override {text!r}: {e}") from None
    return sections


def _unknown(dotted: str) -> str:
    """'unknown section/key ... (known: ...); did you mean ...?'."""
    section, _, name = dotted.partition(".")
    if section not in _SECTION_TYPES:
        return f"unknown section {section!r} (known: {', '.join(SECTIONS)}){_did_you_mean(dotted)}"
    known = ", ".join(s.name for s in key_specs().values() if s.section == section)
    return f"unknown key {dotted!r} (known: {known}){_did_you_mean(dotted)}"


def _did_you_mean(name: str) -> str:
    """A '; did you mean ...?' hint for a misspelt or misplaced section or key ('' if none)."""
    keys = [k for k in key_specs() if k != name]  # suggesting what was typed helps no one
    # The right key in the wrong section (or in none) beats a mere spelling match.
    matches = [k for k in keys if k.endswith("." + name.rsplit(".", 1)[-1])]
    if not matches:
        same_section = [k for k in keys if k.startswith(name.split(".", 1)[0] + ".")]
        matches = difflib.get_close_matches(name, same_section or [*SECTIONS, *keys], n=1)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def _show(value: Any) -> str:
    """'null' or 'TYPE VALUE' for an error message, shortened."""
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
