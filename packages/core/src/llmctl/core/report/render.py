"""The report as blocks, rendered twice: markdown (report.md, to hand in or paste) and a self-contained HTML
page (report.html: one file, inline style, the PNGs beside it by relative path) that any browser opens
without a network or a markdown renderer. Both come from the same blocks, so they say the same thing."""

from __future__ import annotations

import dataclasses
import html


@dataclasses.dataclass
class Heading:
    text: str
    level: int = 2


@dataclasses.dataclass
class Para:
    text: str  # plain text; `code` spans in backticks


@dataclasses.dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    align: str = ""  # per column: "l" or "r" (default: first column left, the rest right)


@dataclasses.dataclass
class Image:
    src: str  # relative to the report folder
    alt: str


@dataclasses.dataclass
class Code:
    text: str
    lang: str = ""
    summary: str | None = None  # HTML: folded under this summary line


Block = Heading | Para | Table | Image | Code


def _align(table: Table) -> str:
    return table.align or "l" + "r" * (len(table.header) - 1)


# ---- markdown ----------------------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "|".join("---:" if a == "r" else "---" for a in _align(b)) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.alt}]({b.src})", ""]
        elif isinstance(b, Code):
            if b.summary:
                out += [f"{b.summary}:", ""]
            out += [f"```{b.lang}", b.text.rstrip("\n"), "```", ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ---- HTML --------------------------------------------------------------------------------------------------
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; }
th { background: #f4f4f4; }
td.r { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; margin: .5rem 0; }
pre { background: #f7f7f7; padding: .7rem; overflow-x: auto; font-size: .85rem; }
code { background: #f2f2f2; padding: 0 .2rem; }
"""


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code> (the only markup the blocks' plain text carries)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: list[Block], title: str) -> str:
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            align = _align(b)
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f'<td class="{a}">{_inline(str(c))}</td>' for a, c in zip(align, row))
                           + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            body.append(f'<p><img src="{html.escape(b.src, quote=True)}" alt="{html.escape(b.alt, quote=True)}"></p>')
        elif isinstance(b, Code):
            pre = f"<pre><code>{html.escape(b.text)}</code></pre>"
            body.append(f"<details><summary>{_inline(b.summary)}</summary>{pre}</details>" if b.summary else pre)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
