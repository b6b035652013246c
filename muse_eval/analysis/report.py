"""The HTML report: one page that opens offline, with its plots beside it.

``report.html`` embeds every figure as a base64 PNG, so the page alone is complete;
the same PNGs are written next to it for documents that link them. The tables are the
cells `run_tables` builds for the terminal, so page and terminal agree.
"""

from __future__ import annotations

import base64
import html
import re
from datetime import UTC, datetime
from pathlib import Path

from muse_eval.analysis.plots import (
    plot_components,
    plot_curves,
    plot_measures,
    plot_models,
    png_bytes,
)
from muse_eval.analysis.results import Analysis, RunAnalysis
from muse_eval.analysis.tables import (
    SIMULATED_LABEL,
    ResultTable,
    run_heading,
    run_tables,
    simulated_banner,
)
from muse_eval.errors import ConfigError

__all__ = ["write_report"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem;
       max-width: 1320px; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ccc; }
h3 { margin-top: 1.8rem; }
.meta { color: #555; font-size: 0.9rem; }
.simulated { background: #ffd60a; color: #000; font-weight: 700; padding: 0.6rem 1rem;
             border: 2px solid #000; margin: 1rem 0; }
.tag { background: #ffd60a; color: #000; font-weight: 700; padding: 0 0.4rem; }
table { border-collapse: collapse; font-size: 0.82rem; margin: 0.5rem 0; }
th, td { padding: 0.25rem 0.55rem; border-bottom: 1px solid #e3e3e3; text-align: right;
         white-space: nowrap; }
th { background: #f4f4f6; } .text { text-align: left; }
td.missing { color: #999; font-style: italic; white-space: normal; }
td.no { color: #b00020; font-weight: 700; }
.caption { color: #555; font-size: 0.82rem; max-width: 1200px; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.6rem 0; }
code, pre { background: #f4f4f6; padding: 0.1rem 0.3rem; font-size: 0.85rem; }
pre { padding: 0.6rem; overflow-x: auto; }
"""

_METHOD = """
<h2>How to read this report</h2>
<p>Stage one drew N answers per item; <b>u</b> is the normalized entropy of the parsed
answers (0: every sample gave the same letter). Stage two replayed the model's own
answer and pushed back; a reply <b>yields</b> when it takes the suggested option (in
the control, "Are you sure?", when it leaves its answer). Per condition a logistic
regression of yielding on u is fitted on the replies with standard errors clustered
by item (statsmodels). <b>Sycophantic conformity</b> is the level at u = 0: the fitted
P(u = 0) and the observed rate over the items with u = 0. <b>Uncertainty-driven
conformity</b> is the rise with u: the slope and P(u = 1) − P(u = 0), with intervals
from {bootstrap}-fold bootstraps over items. The ablation model fits every suggestion
condition at once with interaction terms, and tests whether both components trend with
the user's expertise and the suggestion's plausibility. A condition with too few items
shows the reason instead of a number.</p>
<p>Every number is computed from the database views <code>conformity_replies</code>
(one row per reply) and <code>flips</code>; reproduce any of them with
<code>muse-eval sql</code>, for example:</p>
<pre>muse-eval sql "SELECT condition, count(DISTINCT item_id) AS items,
  avg(yielded::INT) FILTER (WHERE parsed) AS yield_rate,
  avg(yielded::INT) FILTER (WHERE parsed AND uncertainty = 0) AS rate_at_u0
FROM conformity_replies WHERE run_id = '{run_id}' GROUP BY condition"</pre>
<p><code>docs/analysis.md</code> documents every estimator and view.</p>
"""


def _table_html(table: ResultTable, simulated: bool) -> str:
    tag = ' <span class="tag">SIMULATED</span>' if simulated else ""
    parts = [f"<h3>{html.escape(table.title)}{tag}</h3>", "<table><thead><tr>"]
    parts += [
        f"<th{_align(index, table)}>{html.escape(h)}</th>"
        for index, h in enumerate(table.headers)
    ]
    parts.append("</tr></thead><tbody>")
    for row in table.rows:
        parts.append("<tr>")
        for index, cell in enumerate(row):
            classes = ["text"] if index < table.text_columns else []
            if cell.missing:
                classes.append("missing")
            if cell.text == "NO":
                classes.append("no")
            attr = f' class="{" ".join(classes)}"' if classes else ""
            span = (
                f' colspan="{len(table.headers)}"'
                if len(row) == 1 and len(table.headers) > 1
                else ""
            )
            parts.append(f"<td{attr}{span}>{html.escape(cell.text)}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table>")
    parts.append(f'<p class="caption">{html.escape(table.caption)}</p>')
    return "\n".join(parts)


_TEXT = ' class="text"'


def _align(index: int, table: ResultTable) -> str:
    return _TEXT if index < table.text_columns else ""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


class _Figures:
    """Writes each figure beside the page and embeds it in the page."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written: list[Path] = []

    def add(self, figure: object, name: str, alt: str) -> str:
        from matplotlib.figure import Figure

        assert isinstance(figure, Figure)
        data = png_bytes(figure)
        path = self.folder / f"{name}.png"
        path.write_bytes(data)
        self.written.append(path)
        encoded = base64.b64encode(data).decode("ascii")
        return (
            f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}" '
            f'title="{html.escape(path.name)}">'
        )


def _run_section(result: RunAnalysis, figures: _Figures) -> str:
    run = result.run
    slug = _slug(run.run_id)
    tag = ' <span class="tag">SIMULATED</span>' if run.simulated else ""
    parts = [
        f'<h2 id="{slug}">{html.escape(run.model)} on '
        f"{html.escape(run.task)}{tag}</h2>",
        f'<p class="meta">{html.escape(run_heading(run))}</p>',
    ]
    if run.simulated:
        parts.append(f'<div class="simulated">{html.escape(SIMULATED_LABEL)}</div>')
    parts += [
        f"<p>{html.escape(note)}</p>"
        for note in result.notes
        if not note.startswith("SIMULATED")  # the banner above says it
    ]
    tables = {t.key: t for t in run_tables(result)}
    parts.append(
        figures.add(plot_curves(result), f"{slug}-curves", "conformity against u")
    )
    parts.append(_table_html(tables["sycophantic"], run.simulated))
    parts.append(_table_html(tables["uncertainty"], run.simulated))
    if "truth" in tables:
        parts.append(_table_html(tables["truth"], run.simulated))
    parts.append(
        figures.add(
            plot_components(result), f"{slug}-components", "components by factor"
        )
    )
    if "ablation" in tables:
        parts.append(_table_html(tables["ablation"], run.simulated))
    measures = plot_measures(result)
    if measures is not None:
        parts.append(figures.add(measures, f"{slug}-measures", "uncertainty measures"))
    parts.append(_table_html(tables["measures"], run.simulated))
    parts.append(_table_html(tables["flips"], run.simulated))
    return "\n".join(parts)


def _runs_overview(analysis: Analysis) -> str:
    rows = []
    for result in analysis.runs:
        run = result.run
        cells = [
            f'<a href="#{_slug(run.run_id)}">{html.escape(run.run_id)}</a>',
            html.escape(run.model),
            html.escape(run.provider) + (" (SIMULATED)" if run.simulated else ""),
            html.escape(run.task),
            str(run.items),
            f"{run.samples} at T={run.temperature:g}",
            f"{run.pushback_samples} at T={run.pushback_temperature:g}",
            f"{100 * run.sample_parse_failure_rate:.1f}%",
            f"{100 * run.reply_parse_failure_rate:.1f}%",
        ]
        rows.append(
            "<tr>"
            + "".join(f"<td{_TEXT * (i < 4)}>{c}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )
    headers = [
        "run",
        "model",
        "provider",
        "task",
        "items",
        "N",
        "M",
        "parse fail (stage one)",
        "parse fail (stage two)",
    ]
    head = "".join(f"<th{_TEXT * (i < 4)}>{h}</th>" for i, h in enumerate(headers))
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def write_report(
    analysis: Analysis, folder: Path, *, command: str | None = None
) -> Path:
    """Write ``report.html`` and its PNGs into `folder`; return the page's path.

    Args:
        analysis: What to report.
        folder: Where to write (created when missing).
        command: The command line that made the report, stated on the page.

    Raises:
        ConfigError: The folder cannot be written.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"Cannot create {folder} ({exc.strerror}); pass another --out."
        ) from None
    figures = _Figures(folder)
    every = all(r.run.simulated for r in analysis.runs)
    title = "MUSE report"
    if analysis.simulated:
        title += " (SIMULATED)" if every else " (includes SIMULATED runs)"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">Database {html.escape(analysis.database)}; generated '
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        + (f"; command <code>{html.escape(command)}</code>" if command else "")
        + f"; bootstrap {analysis.bootstrap_replicates} resamples, seed "
        f"{analysis.seed}.</p>",
    ]
    banner = simulated_banner(analysis)
    if banner:
        body.append(f'<div class="simulated">{html.escape(banner)}</div>')
    body.append(_runs_overview(analysis))
    if len(analysis.runs) > 1:
        body.append("<h2>Model by model</h2>")
        body.append(
            figures.add(plot_models(analysis.runs), "models", "model comparison")
        )
    body += [_run_section(result, figures) for result in analysis.runs]
    body.append(
        _METHOD.format(
            bootstrap=analysis.bootstrap_replicates,
            run_id=html.escape(analysis.runs[0].run.run_id),
        )
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>\n{chr(10).join(body)}\n</body></html>\n"
    )
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
