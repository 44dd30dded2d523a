"""Generated method pages: one per registered method, plus the methods index.

Everything comes from the registry (``transferkit.methods.METHODS``): family, paper,
``Params`` (the parameter table), the class and module docstrings (rendered by mkdocstrings
``:::`` directives, math included), the examples under ``examples/<family>/`` that use the
method, and their measured results from ``examples/results.yaml``. A method registered
tomorrow gets its page the next time ``tools/gen_docs.py`` runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from docgen_fields import fields_table

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FAMILIES = {
    "feature-extraction": "Feature extraction",
    "fine-tuning": "Fine-tuning",
    "domain-adaptation": "Domain adaptation",
    "multi-task": "Multi-task learning",
    "distillation": "Knowledge distillation",
}
#: Modules whose docstrings hold the math of a method's losses (rendered on its page).
LOSS_MODULES: dict[str, list[str]] = {
    "dan": ["transferkit.losses.mmd"],
    "jan": ["transferkit.losses.mmd"],
    "deep_coral": ["transferkit.losses.coral"],
    "mcc": ["transferkit.losses.mcc"],
    "dann": ["transferkit.losses.adversarial"],
    "cdan": ["transferkit.losses.adversarial"],
    "adda": ["transferkit.losses.adversarial"],
    "mdd": ["transferkit.losses.mdd"],
    "drcn": ["transferkit.losses.reconstruction"],
    "dsn": ["transferkit.losses.reconstruction"],
    "finetune": [
        "transferkit.losses.l2sp",
        "transferkit.losses.delta",
        "transferkit.losses.bss",
        "transferkit.losses.lwf",
    ],
    "distill": [
        "transferkit.losses.distill",
        "transferkit.losses.distill_features",
        "transferkit.losses.distill_relational",
    ],
    "multitask": ["transferkit.mtl.architectures", "transferkit.mtl.weighting"],
}


@dataclass
class MethodInfo:
    """What a method page shows."""

    name: str
    family: str
    paper: str
    cls_path: str
    module: str
    params: type
    examples: list[str] = field(default_factory=list)  # paths relative to examples/


def example_methods() -> dict[str, str]:
    """``family/file.yaml`` -> the method it runs, for every example (in family order)."""
    out = {}
    order = list(FAMILIES)

    def key(p: Path) -> tuple[int, bool, str]:  # family order; a source model first
        fam = p.parent.name
        return (order.index(fam) if fam in order else len(order), "pretrain" not in p.stem, p.name)

    for path in sorted(EXAMPLES.glob("*/*.yaml"), key=key):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        out[path.relative_to(EXAMPLES).as_posix()] = (doc.get("method") or {}).get(
            "name", "finetune"
        )
    return out


def load_results() -> dict[str, dict[str, Any]]:
    """``examples/results.yaml``: example path -> {shows, result, source, command, ...}."""
    entries = yaml.safe_load((EXAMPLES / "results.yaml").read_text(encoding="utf-8")) or []
    return {e["example"]: e for e in entries}


def method_infos() -> list[MethodInfo]:
    """Every registered method, in family order then by name, with its examples."""
    from transferkit.methods import METHODS

    by_example = example_methods()
    infos = []
    for name, cls in METHODS.items():
        exs = sorted(p for p, m in by_example.items() if m == name)
        exs.sort(key=lambda p: Path(p).stem != name)  # examples/<family>/<name>.yaml first
        infos.append(
            MethodInfo(
                name=name,
                family=cls.family,
                paper=cls.paper,
                cls_path=f"{cls.__module__}.{cls.__qualname__}",
                module=cls.__module__,
                params=cls.Params,
                examples=exs,
            )
        )
    order = list(FAMILIES)
    infos.sort(key=lambda i: (order.index(i.family) if i.family in order else 99, i.name))
    return infos


def link_urls(text: str) -> str:
    """Bare URLs as Markdown autolinks."""
    return re.sub(r"(?<![<(])(https?://[^\s,;)]+)", r"<\1>", text)


def _directive(path: str, heading: bool) -> list[str]:
    return [
        f"::: {path}",
        "    options:",
        f"      show_root_heading: {'true' if heading else 'false'}",
        "      show_root_full_path: true",
        "      members: false",
        "      heading_level: 3",
        "",
    ]


def _results_section(info: MethodInfo, results: dict[str, dict[str, Any]]) -> list[str]:
    out = ["## Measured results", ""]
    if not info.examples:
        return [*out, "No example yet.", ""]
    for ex in info.examples:
        r = results.get(ex)
        text = r["result"] if r else "not measured yet"
        where = f" ({r['source']})" if r and r.get("source") else ""
        out.append(f"* `examples/{ex}`: {text}{where}")
    out += ["", "How each number was measured: [examples](../examples.md).", ""]
    return out


def method_page(info: MethodInfo, results: dict[str, dict[str, Any]]) -> str:
    """The Markdown page of one method."""
    fam = FAMILIES.get(info.family, info.family)
    out = [
        f"# {info.name}",
        "",
        f"<!-- generated by tools/gen_docs.py from the method registry ({info.cls_path}); "
        "do not edit -->",
        "",
        "| | |",
        "|---|---|",
        f"| family | [{fam}](../guides/{info.family}.md) |",
        f"| paper | {link_urls(info.paper)} |",
        f"| class | `{info.cls_path}` |",
        f"| config | `method: {{name: {info.name}, params: {{...}}}}` |",
        "",
        "## How it works",
        "",
        *_directive(info.cls_path, heading=False),
        "### Module notes",
        "",
        *_directive(info.module, heading=False),
    ]
    for mod in LOSS_MODULES.get(info.name, []):
        out += _directive(mod, heading=True)
    out += ["## Parameters", "", "Keys of `method.params`:", "", fields_table(info.params), ""]
    out += ["## Example", ""]
    if info.examples:
        main = info.examples[0]
        stem = Path(main).stem
        out += [
            "```bash",
            f"transferkit run examples/{main} --out runs/examples/{stem}",
            "```",
            "",
            "```yaml",
            f'--8<-- "examples/{main}"',
            "```",
            "",
        ]
        if len(info.examples) > 1:
            others = ", ".join(f"`examples/{e}`" for e in info.examples[1:])
            out += [f"More examples with this method: {others}.", ""]
    else:
        out += ["No example yet: add `examples/<family>/<method>.yaml`.", ""]
    out += _results_section(info, results)
    return "\n".join(out)


def methods_index(infos: list[MethodInfo]) -> str:
    """The methods overview page: every method by family, with its paper."""
    out = [
        "# Methods",
        "",
        "<!-- generated by tools/gen_docs.py from the method registry; do not edit -->",
        "",
        "Every registered method (`transferkit methods` prints the same list). A config picks "
        "one with `method: {name: ..., params: {...}}`; each page gives the math, the paper, "
        "the parameters, a runnable example and its measured result.",
    ]
    for fam, title in FAMILIES.items():
        rows = [i for i in infos if i.family == fam]
        if not rows:
            continue
        out += ["", f"## {title}", "", f"Guide: [{title}](../guides/{fam}.md).", ""]
        out += ["| method | paper |", "|---|---|"]
        for i in rows:
            paper = link_urls(i.paper).replace("|", "\\|")
            out.append(f"| [`{i.name}`]({i.name}.md) | {paper} |")
    return "\n".join(out) + "\n"


def methods_nav(infos: list[MethodInfo]) -> list[str]:
    """The ``nav`` lines (mkdocs.yml) of the methods section, grouped by family."""
    out = ["  - Methods:", "      - Overview: methods/index.md"]
    for fam, title in FAMILIES.items():
        names = [i.name for i in infos if i.family == fam]
        if names:
            out.append(f"      - {title}:")
            out += [f"          - {n}: methods/{n}.md" for n in names]
    return out
