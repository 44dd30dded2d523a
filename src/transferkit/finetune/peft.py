"""Parameter-efficient fine-tuning: LoRA, IA3 and LoHa adapters injected into any Backbone.

The adapters come from Hugging Face ``peft`` (``inject_adapter_in_model``) and are injected
IN PLACE into the backbone, which keeps its whole surface (``forward``, ``layer_groups``,
``forward_intermediates``, ``prepare``). For a frozen base weight ``W`` (``[out, in]``, or a
conv kernel) and input ``x``:

* LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685):
  ``h = W x + (alpha / r) B A x`` with ``A`` ``[r, in]`` (Kaiming init) and ``B`` ``[out, r]``
  (zero init, so the adapted model equals the base model at step 0). A conv's ``A`` is a
  conv with the base kernel/stride and ``r`` outputs, its ``B`` a 1x1 conv.
* IA3 (Liu et al. 2022, https://arxiv.org/abs/2205.05638): ``h = l * (W x)`` with a learned
  vector ``l`` ``[out]`` (ones at init); for feed-forward down-projections the input is
  scaled instead, ``h = W (l * x)`` with ``l`` ``[in]``.
* LoHa (Hyeon-Woo et al. 2022, https://arxiv.org/abs/2108.06098):
  ``dW = (alpha / r) (B1 A1) * (B2 A2)`` (Hadamard product of two rank-``r`` products).

Default targets (``target_modules=None``): for transformers (any module whose class name
contains ``Attention``) every ``nn.Linear`` (query/key/value/output/FFN projections) and,
for LoRA, every ``nn.MultiheadAttention`` (in- and out-projection); for CNNs every
``nn.Conv2d`` and ``nn.Linear``. Layers whose class overrides ``forward`` (timm's
``Conv2dSame``, weight-standardised convs) are never adapted: an adapter computed with the
stock op would not match them. Grouped / depthwise convs are skipped by LoRA (peft cannot
merge them) but adapted by IA3 and LoHa. Explicit ``target_modules`` match module names
like peft does: a name equal to the entry or ending with ``"." + entry``.

Layer groups keep covering every parameter: wrapped base weights (``x.base_layer.weight``)
stay in their group and adapter weights join the group of the layer they adapt.
``merge_peft`` folds the adapters into the base weights and restores the original modules,
parameter names and layer groups, so ``save_backbone`` / ``file:`` work with the plain spec.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from peft import IA3Config, LoHaConfig, LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.errors import BackboneError, ConfigError, TrainingError

Kind = Literal["lora", "ia3", "loha"]
LAYER_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "lora": (nn.Linear, nn.Conv2d, nn.MultiheadAttention),
    "ia3": (nn.Linear, nn.Conv2d),
    "loha": (nn.Linear, nn.Conv2d),
}
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
WHERE = "peft.target_modules"


class PeftConfig(BaseModel):
    """Which adapter to inject where (see the module docstring for the math)."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True)

    kind: Kind = Field("lora", description="adapter type: lora, ia3 or loha")
    r: int = Field(8, ge=1, description="rank of the update (LoRA, LoHa; unused by IA3)")
    alpha: float = Field(16, gt=0, description="scale: the update is multiplied by alpha / r")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout on the adapter input (LoRA) or rank (LoHa)"
    )
    target_modules: list[str] | None = Field(
        None, description="module names or dotted suffixes to adapt; None = per-family default"
    )
    feedforward_modules: list[str] | None = Field(
        None, description="IA3 only: targets whose input is scaled; None = FFN down-projections"
    )
    train_norms: bool = Field(False, description="also train LayerNorm/BatchNorm affine params")


def trainable_parameter_count(module: nn.Module) -> int:
    """Number of scalar parameters with ``requires_grad`` (shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _stock_forward(module: nn.Module) -> bool:
    """True when ``module`` computes exactly what its torch base class computes."""
    for base in (nn.Linear, nn.Conv2d, nn.MultiheadAttention):
        if isinstance(module, base):
            return type(module).forward is base.forward
    return False


def _rejection(module: nn.Module, kind: Kind) -> str | None:
    """Why ``kind`` cannot adapt ``module`` (``None`` when it can)."""
    if not isinstance(module, LAYER_TYPES[kind]):
        names = ", ".join(t.__name__ for t in LAYER_TYPES[kind])
        return f"it is a {type(module).__name__}; {kind} adapts {names} layers"
    if not _stock_forward(module):
        return f"{type(module).__name__} overrides forward, so an adapter would not match it"
    if kind == "lora" and isinstance(module, nn.Conv2d) and module.groups > 1:
        return f"it is a grouped conv (groups={module.groups}), which LoRA cannot merge into"
    if isinstance(module, nn.MultiheadAttention) and not module._qkv_same_embed_dim:
        return "LoRA supports MultiheadAttention only with equal query/key/value sizes"
    return None


def _walk(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named modules, minus those inside a MultiheadAttention or an existing adapter layer
    (an MHA never calls its ``out_proj``; adapter internals are not targets)."""
    out: list[tuple[str, nn.Module]] = []
    closed: list[str] = []
    for name, mod in root.named_modules():
        if any(name.startswith(c + ".") for c in closed):
            continue
        out.append((name, mod))
        if isinstance(mod, nn.MultiheadAttention | BaseTunerLayer):
            closed.append(name)
    return [(n, m) for n, m in out if n]


def _is_transformer(root: nn.Module) -> bool:
    return any("Attention" in type(m).__name__ for m in root.modules())


def default_target_modules(root: nn.Module, kind: Kind = "lora") -> list[str]:
    """Full names of the modules adapted when ``target_modules`` is ``None``."""
    linear_only = _is_transformer(root)
    out = []
    for name, mod in _walk(root):
        if _rejection(mod, kind) is not None:
            continue
        if linear_only and isinstance(mod, nn.Conv2d):
            continue
        out.append(name)
    return out


def _short_name(full: str) -> str:
    """Shortest dotted suffix of ``full`` that starts with a non-numeric part."""
    parts = full.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if not parts[i].isdigit():
            return ".".join(parts[i:])
    return full


def _suffixes(names: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for n in names:
        parts = n.split(".")
        for i in range(len(parts)):
            seen.setdefault(".".join(parts[i:]), None)
    return list(seen)


def _matches(name: str, entry: str) -> bool:
    return name == entry or name.endswith("." + entry)


def _no_match_error(entry: str, adaptable: Sequence[str], spec: str, kind: Kind) -> ConfigError:
    close = difflib.get_close_matches(entry, _suffixes(adaptable), n=4, cutoff=0.5)
    short = list(dict.fromkeys(_short_name(n) for n in adaptable))
    avail = ", ".join(short[:20]) + (", ..." if len(short) > 20 else "")
    hint = f"close matches: {', '.join(close)}; " if close else ""
    return ConfigError(
        f"target_modules entry {entry!r} matches no module that {kind} can adapt in {spec}",
        where=WHERE,
        fix=f"{hint}available layers: {avail or 'none'} (or leave target_modules unset)",
    )


def _wrong_layer_error(
    entry: str, hit: tuple[str, nn.Module], adaptable: Sequence[str], kind: Kind
) -> ConfigError:
    name, mod = hit
    inside = list(dict.fromkeys(_short_name(n) for n in adaptable if n.startswith(name + ".")))
    if inside:
        fix = f"name the layers inside it, e.g. {', '.join(inside[:6])}"
    elif isinstance(mod, nn.Conv2d) and mod.groups > 1:
        fix = "use kind='loha' or 'ia3' for grouped convs, or leave this layer out"
    else:
        fix = "leave this layer out of target_modules"
    return ConfigError(
        f"target_modules entry {entry!r} matches {name}, but {_rejection(mod, kind)}",
        where=WHERE,
        fix=fix,
    )


def _resolve(root: nn.Module, entries: Sequence[str], kind: Kind, spec: str) -> list[str]:
    """Full names of the adaptable modules matched by ``entries`` (in model order)."""
    walked = _walk(root)
    adaptable = [n for n, m in walked if _rejection(m, kind) is None]
    chosen: set[str] = set()
    for entry in entries:
        hits = [n for n in adaptable if _matches(n, entry)]
        if not hits:
            bad = [(n, m) for n, m in walked if _matches(n, entry)]
            if bad:
                raise _wrong_layer_error(entry, bad[0], adaptable, kind)
            raise _no_match_error(entry, adaptable, spec, kind)
        chosen.update(hits)
    return [n for n in adaptable if n in chosen]


def _feedforward(root: nn.Module, targets: list[str], cfg: PeftConfig, spec: str) -> list[str]:
    """IA3 targets whose input is scaled: given, or every Linear with ``in > out``."""
    if cfg.feedforward_modules is not None:
        ff = _resolve(root, cfg.feedforward_modules, cfg.kind, spec)
        outside = [n for n in ff if n not in targets]
        if outside:
            raise ConfigError(
                f"feedforward_modules {outside[:3]} are not among the target modules",
                where="peft.feedforward_modules",
                fix="feedforward_modules must be a subset of target_modules",
            )
        return ff
    mods = dict(root.named_modules())
    return [
        n
        for n in targets
        if isinstance(mods[n], nn.Linear) and mods[n].in_features > mods[n].out_features
    ]


def _exact(names: Sequence[str]) -> str:
    """A regex that peft full-matches against exactly these module names."""
    return "|".join(re.escape(n) for n in names)


def _peft_config(cfg: PeftConfig, targets: list[str], ff: list[str]) -> Any:
    if cfg.kind == "lora":
        return LoraConfig(
            r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=_exact(targets)
        )
    if cfg.kind == "loha":
        return LoHaConfig(
            r=cfg.r, alpha=cfg.alpha, rank_dropout=cfg.dropout, target_modules=_exact(targets)
        )
    # "(?!)" never matches: no feed-forward layer among the targets
    return IA3Config(target_modules=_exact(targets), feedforward_modules=_exact(ff) or "(?!)")


def _tuner_paths(root: nn.Module) -> list[str]:
    return [n for n, m in root.named_modules() if isinstance(m, BaseTunerLayer)]


def has_adapters(module: nn.Module) -> bool:
    """True when ``module`` holds injected peft adapter layers."""
    return bool(_tuner_paths(module))


def adapter_parameter_names(module: nn.Module) -> set[str]:
    """Names of adapter parameters: inside an adapter layer but not inside its ``base_layer``.

    The nearest enclosing adapter layer decides, so nested wrappers (LoRA on an MHA wraps its
    ``out_proj`` too) are handled.
    """
    tuners = sorted(_tuner_paths(module), key=len, reverse=True)
    out = set()
    for name, _ in module.named_parameters():
        owner = next((t for t in tuners if name.startswith(t + ".")), None)
        if owner is not None and not name.startswith(f"{owner}.base_layer."):
            out.add(name)
    return out


def _strip(name: str) -> str:
    """The pre-injection name of a parameter: ``a.base_layer.weight`` -> ``a.weight``."""
    return ".".join(p for p in name.split(".") if p != "base_layer")


def _remap_groups(old: Sequence[Sequence[str]], names: Sequence[str]) -> list[tuple[str, ...]]:
    """Layer groups over the current parameter ``names``, derived from the ``old`` groups.

    A renamed base parameter keeps its group and position; a new (adapter) parameter joins
    the group of the nearest module path it shares with an old parameter, right after that
    module's base parameters.
    """
    index: dict[str, tuple[int, int]] = {}  # stripped name -> (group, position)
    under: dict[str, tuple[int, int]] = {}  # module path -> (group, last position)
    for k, group in enumerate(old):
        for pos, n in enumerate(group):
            s = _strip(n)
            index[s] = (k, pos)
            parts = s.split(".")[:-1]
            for i in range(len(parts), 0, -1):
                prefix = ".".join(parts[:i])
                if under.get(prefix, (k,))[0] == k:
                    under[prefix] = (k, pos)
    new: list[list[tuple[tuple[int, int, int], str]]] = [[] for _ in old]
    for order, n in enumerate(names):
        s = _strip(n)
        hit, rank = index.get(s), 0
        parts = s.split(".")[:-1]
        while hit is None and parts:
            hit, rank = under.get(".".join(parts)), 1
            parts.pop()
        if hit is not None:
            new[hit[0]].append(((hit[1], rank, order), n))
    return [tuple(n for _, n in sorted(g)) for g in new]


def _sync_layer_groups(backbone: Backbone, old: Sequence[Sequence[str]]) -> None:
    """Make ``layer_groups()`` follow renamed / added parameters (see module docstring)."""
    names = [n for n, _ in backbone.named_parameters()]
    new = _remap_groups(old, names)
    if [set(g.param_names) for g in backbone.layer_groups()] == [set(g) for g in new]:
        return  # the backbone derives its groups from its modules
    stored = getattr(backbone, "_group_params", None)
    if isinstance(stored, list) and len(stored) == len(new):
        backbone._group_params = new
        return
    raise BackboneError(
        f"{type(backbone).__name__}.layer_groups() does not follow renamed parameters",
        where=backbone.spec,
        fix="derive layer groups from named_parameters(), or store them in _group_params",
    )


def _restore_param_order(base: nn.Module) -> None:
    """peft re-registers an MHA's parameters on unload; put them back in torch's order
    (so ``state_dict`` keys come out exactly as before injection)."""
    for mod in base.modules():
        if isinstance(mod, nn.MultiheadAttention):
            twin = nn.MultiheadAttention(mod.embed_dim, mod.num_heads, **_mha_kwargs(mod))
            canon = list(twin._parameters)
        elif isinstance(mod, nn.Linear | nn.Conv2d):
            canon = ["weight", "bias"]
        else:
            continue
        params = mod._parameters
        ordered = [k for k in canon if k in params] + [k for k in params if k not in canon]
        items = [(k, params[k]) for k in ordered]
        params.clear()
        params.update(items)


def _mha_kwargs(mha: nn.MultiheadAttention) -> dict[str, Any]:
    return {
        "bias": mha.in_proj_bias is not None,
        "add_bias_kv": mha.bias_k is not None,
        "kdim": mha.kdim,
        "vdim": mha.vdim,
        "device": "meta",
    }


def _unload(root: nn.Module, merge: bool) -> None:
    """Replace every outermost adapter layer by its base layer (merged first if asked)."""
    paths = _tuner_paths(root)
    outer = [p for p in paths if not any(p.startswith(q + ".") for q in paths)]
    for path in outer:
        layer = root.get_submodule(path)
        try:
            if hasattr(layer, "unload_and_optionally_merge_module"):
                base = layer.unload_and_optionally_merge_module(
                    merge=merge, safe_merge=True, adapter_names=None
                )
            else:
                if merge:
                    layer.merge(safe_merge=True)
                base = layer.get_base_layer()
        except ValueError as exc:  # safe_merge found NaN / inf
            raise TrainingError(
                f"cannot merge the adapter of {path}: {exc}",
                where=path,
                fix="the adapter weights are not finite; train with a lower learning rate",
            ) from exc
        parent, _, child = path.rpartition(".")
        setattr(root.get_submodule(parent) if parent else root, child, base)
        _restore_param_order(base)
    if hasattr(root, "peft_config"):
        del root.peft_config


def _set_trainable(backbone: Backbone, train_norms: bool) -> None:
    """Adapters (and, if asked, normalisation affine params) trainable; all else frozen."""
    keep = adapter_parameter_names(backbone)
    if train_norms:
        for name, mod in backbone.named_modules():
            if isinstance(mod, NORM_TYPES) or type(mod).__name__.endswith("Norm"):
                keep |= {f"{name}.{p}".lstrip(".") for p, _ in mod.named_parameters(recurse=False)}
    for name, p in backbone.named_parameters():
        p.requires_grad_(name in keep)


def _rollback(backbone: Backbone, flags: dict[str, bool]) -> None:
    """Undo a failed injection: original modules and ``requires_grad`` flags."""
    _unload(backbone, merge=False)
    for name, p in backbone.named_parameters():
        p.requires_grad_(flags.get(name, p.requires_grad))


def apply_peft(backbone: Backbone, cfg: PeftConfig) -> dict[str, int]:
    """Inject ``cfg``'s adapters into ``backbone`` in place and freeze its base weights.

    Returns ``{"trainable": n, "total": n, "base_frozen": n}`` (scalar counts; ``total``
    includes the adapters). Raises :class:`ConfigError` when a ``target_modules`` entry
    matches no adaptable layer (naming close matches) or the backbone already has adapters.
    """
    if has_adapters(backbone):
        raise ConfigError(
            f"{backbone.spec} already holds peft adapters",
            where=WHERE,
            fix="call merge_peft(backbone) first, or apply adapters once",
        )
    if cfg.target_modules is None:
        targets = default_target_modules(backbone, cfg.kind)
        if not targets:
            raise ConfigError(
                f"{backbone.spec} has no layer that {cfg.kind} can adapt",
                where=WHERE,
                fix="name target_modules explicitly, or use full fine-tuning",
            )
    else:
        targets = _resolve(backbone, cfg.target_modules, cfg.kind, backbone.spec)
    ff = _feedforward(backbone, targets, cfg, backbone.spec) if cfg.kind == "ia3" else []
    old = [g.param_names for g in backbone.layer_groups()]
    flags = {n: p.requires_grad for n, p in backbone.named_parameters()}
    try:
        inject_adapter_in_model(_peft_config(cfg, targets, ff), backbone)
    except (ValueError, TypeError) as exc:
        _rollback(backbone, flags)
        raise ConfigError(f"peft could not inject {cfg.kind}: {exc}", where=WHERE) from exc
    if hasattr(backbone, "peft_config"):
        del backbone.peft_config
    try:
        _sync_layer_groups(backbone, old)
    except BackboneError:
        _rollback(backbone, flags)
        raise
    _set_trainable(backbone, cfg.train_norms)
    adapters = adapter_parameter_names(backbone)
    named = list(backbone.named_parameters())
    return {
        "trainable": trainable_parameter_count(backbone),
        "total": sum(p.numel() for _, p in named),
        "base_frozen": sum(
            p.numel() for n, p in named if n not in adapters and not p.requires_grad
        ),
    }


def merge_peft(backbone: Backbone) -> None:
    """Fold the adapters into the base weights and remove them, in place.

    ``W <- W + dW`` (LoRA, LoHa) or ``W <- diag(l) W`` / ``W diag(l)`` (IA3), so outputs are
    unchanged up to float rounding, and the parameter names, ``state_dict`` keys and layer
    groups are the original ones again. Base weights keep their ``requires_grad`` flags.
    A backbone without adapters is left as is.
    """
    if not has_adapters(backbone):
        return
    old = [g.param_names for g in backbone.layer_groups()]
    _unload(backbone, merge=True)
    _sync_layer_groups(backbone, old)
