"""HTML building blocks: the page shell with inline CSS, tables, sections, banners.

Every piece of text that came from a run (dataset names, class names, config, keys) goes
through :func:`esc` (``html.escape`` with quotes), so a report is safe to open whatever a
run directory holds. The page needs no network, no JavaScript and no other file.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

CSS = """
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--card:#fff;--accent:#2563eb;
--pos:#15803d;--pos-bg:#ecfdf3;--neg:#b91c1c;--neg-bg:#fef2f2;--inc:#4b5563;--inc-bg:#f3f4f6}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);line-height:1.5;font-size:15px;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 20px 48px}
header h1{font-size:1.65rem;margin:0 0 4px;letter-spacing:-.01em}
header .sub{color:var(--muted);margin:0 0 18px}
.chips{display:flex;flex-wrap:wrap;gap:6px;margin:0 0 20px;padding:0;list-style:none}
.chips li{background:var(--card);border:1px solid var(--line);border-radius:999px;
padding:2px 10px;font-size:.82rem;color:#374151}
.chips b{font-weight:600;color:var(--muted);margin-right:4px}
.verdict{border-radius:12px;padding:20px 24px;margin:0 0 22px;border:1px solid;
border-left-width:8px}
.verdict .label{font-size:.78rem;font-weight:700;letter-spacing:.08em;text-transform:uppercase}
.verdict .sentence{font-size:1.28rem;font-weight:600;margin:4px 0 6px;line-height:1.35}
.verdict .how{font-size:.85rem;color:var(--muted);margin:0}
.verdict.positive{background:var(--pos-bg);border-color:var(--pos);color:#14532d}
.verdict.positive .label{color:var(--pos)}
.verdict.negative{background:var(--neg-bg);border-color:var(--neg);color:#7f1d1d}
.verdict.negative .label{color:var(--neg)}
.verdict.inconclusive,.verdict.none{background:var(--inc-bg);border-color:#9ca3af;color:#1f2937}
.verdict.inconclusive .label,.verdict.none .label{color:var(--inc)}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;
padding:18px 22px;margin:0 0 18px}
section h2{font-size:1.08rem;margin:0 0 12px}
section h3{font-size:.95rem;margin:16px 0 8px;color:#374151}
section p.note{color:var(--muted);font-size:.88rem;margin:8px 0 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem;font-variant-numeric:tabular-nums}
table.compact{width:auto;min-width:min(100%,460px)}
th,td{padding:7px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;color:#374151;background:#f9fafb;white-space:nowrap}
td.num,th.num{text-align:right;white-space:nowrap}
tr.hl td{background:#eff6ff}
tr.best td:first-child{box-shadow:inset 3px 0 0 var(--accent)}
td strong{font-weight:700}
.tag{display:inline-block;font-size:.72rem;font-weight:600;border-radius:999px;padding:1px 8px;
margin-left:6px;vertical-align:1px;background:#e0e7ff;color:#3730a3;white-space:nowrap}
.pill{display:inline-block;white-space:nowrap;font-size:.78rem;font-weight:700;
border-radius:999px;padding:1px 10px}
.pill.positive{background:var(--pos-bg);color:var(--pos)}
.pill.negative{background:var(--neg-bg);color:var(--neg)}
.pill.inconclusive,.pill.none{background:var(--inc-bg);color:var(--inc)}
.desc{color:var(--muted);font-size:.82rem}
figure{margin:6px 0 0}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:var(--muted);font-size:.82rem;text-align:center;margin-top:4px}
.grid2{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:18px;align-items:start}
@media (max-width:820px){.grid2{grid-template-columns:1fr}}
.cards{display:flex;flex-wrap:wrap;gap:18px;margin:0 0 18px;align-items:flex-start}
.cards>section{flex:1 1 440px;margin:0;min-width:0}
.cards table.compact{width:100%}
.notes{background:#fffbeb;border:1px solid #fcd34d;border-radius:12px;padding:12px 18px;
margin:0 0 18px;font-size:.9rem;color:#78350f}
.notes ul{margin:4px 0 0;padding-left:20px}
pre{background:#0f172a;color:#e2e8f0;border-radius:8px;padding:14px 16px;overflow-x:auto;
font-size:.82rem;line-height:1.45;margin:0;
font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
footer{color:var(--muted);font-size:.8rem;text-align:center;margin-top:26px}
a{color:var(--accent)}
@media print{body{background:#fff}section{break-inside:avoid;border-color:#d1d5db}}
"""


def esc(x: Any) -> str:
    """HTML-escape any value's ``str``."""
    return html.escape(str(x), quote=True)


def page(title: str, body: Iterable[str]) -> str:
    """A complete, self-contained HTML document."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + f"\n<footer>Generated by transferkit on {esc(stamp)}.</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def section(title: str, *content: str, sid: str | None = None) -> str:
    """A card with a heading; ``content`` is already-safe HTML."""
    ident = f' id="{esc(sid)}"' if sid else ""
    return f"<section{ident}>\n<h2>{esc(title)}</h2>\n" + "\n".join(content) + "\n</section>"


def cards(items: Sequence[str]) -> str:
    """Small sections side by side (wrapping on narrow screens)."""
    items = [i for i in items if i]
    if len(items) < 2:
        return "".join(items)
    return '<div class="cards">' + "\n".join(items) + "</div>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def notes_box(notes: Sequence[str]) -> str:
    """The yellow box listing what was missing or damaged in the run directory."""
    if not notes:
        return ""
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return f'<div class="notes"><strong>Incomplete run directory.</strong><ul>{items}</ul></div>'


def banner(verdict_cls: str, label: str, sentence: str, how: str | None = None) -> str:
    """The verdict banner, coloured by ``verdict_cls`` (positive/negative/inconclusive/none)."""
    extra = f'<p class="how">{esc(how)}</p>' if how else ""
    return (
        f'<div class="verdict {esc(verdict_cls)}" id="verdict" role="status">'
        f'<div class="label">{esc(label)}</div>'
        f'<p class="sentence">{esc(sentence)}</p>{extra}</div>'
    )


def chips(items: Sequence[tuple[str, str]]) -> str:
    """A row of ``key: value`` chips for run facts."""
    if not items:
        return ""
    lis = "".join(f"<li><b>{esc(k)}</b>{esc(v)}</li>" for k, v in items)
    return f'<ul class="chips">{lis}</ul>'


class Cell:
    """A table cell: escaped ``text`` unless ``raw`` is given (already-safe HTML)."""

    def __init__(
        self, text: Any = "", *, num: bool = False, raw: str | None = None, strong: bool = False
    ) -> None:
        self.html = raw if raw is not None else esc(text)
        if strong:
            self.html = f"<strong>{self.html}</strong>"
        self.num = num


def table(
    header: Sequence[str | Cell],
    rows: Sequence[Sequence[Any]],
    row_classes: Sequence[str] | None = None,
    tid: str | None = None,
    compact: bool = False,
) -> str:
    """An HTML table; cells are :class:`Cell` or plain values (escaped).

    ``compact`` tables take the width of their content (key/value lists) instead of 100%.
    """

    def cell(tag: str, c: Any) -> str:
        c = c if isinstance(c, Cell) else Cell(c)
        cls = ' class="num"' if c.num else ""
        return f"<{tag}{cls}>{c.html}</{tag}>"

    head = "".join(cell("th", h) for h in header)
    body = []
    for i, r in enumerate(rows):
        rc = row_classes[i] if row_classes and row_classes[i] else ""
        attr = f' class="{esc(rc)}"' if rc else ""
        body.append(f"<tr{attr}>" + "".join(cell("td", c) for c in r) + "</tr>")
    ident = f' id="{esc(tid)}"' if tid else ""
    ident += ' class="compact"' if compact else ""
    return (
        f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def figure(uri: str, alt: str, caption: str | None = None) -> str:
    """An embedded image; ``uri`` must be a ``data:image/png;base64,`` URI."""
    if not uri.startswith("data:image/png;base64,"):
        raise ValueError("report images must be embedded PNG data URIs")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'


def pill(verdict_cls: str, text: str) -> str:
    return f'<span class="pill {esc(verdict_cls)}">{esc(text)}</span>'


def tag(text: str) -> str:
    return f'<span class="tag">{esc(text)}</span>'
