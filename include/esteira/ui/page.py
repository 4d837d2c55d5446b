"""The Esteira page as server-rendered HTML (Jinja2, autoescaped), self-contained: inline CSS
and an inline SVG chart, nothing fetched from the internet.

Airflow shows the page in an iframe, so links into Airflow open in the top window and links
to MLflow in a new tab.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from esteira.ui.chart import drift_chart_svg

if TYPE_CHECKING:
    import jinja2

HISTORY_ROWS = 20

_STYLE = """
:root { --fg:#0f172a; --muted:#64748b; --line:#e2e8f0; --bg:#f1f5f9; --card:#fff;
        --ok:#15803d; --okbg:#dcfce7; --bad:#b91c1c; --badbg:#fee2e2; --warn:#92400e;
        --warnbg:#fef3c7; --accent:#2563eb; }
* { box-sizing: border-box; }
body { margin:0; font:13px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--fg); background:var(--bg); }
header { padding:14px 24px; background:var(--card); border-bottom:1px solid var(--line);
         display:flex; align-items:baseline; gap:16px; flex-wrap:wrap; }
header h1 { font-size:20px; margin:0; }
header .sub { color:var(--muted); }
nav a { margin-right:10px; }
main { padding:16px 24px 40px; max-width:1480px; }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
section.usecase { margin-bottom:28px; }
h2 { font-size:18px; margin:8px 0 2px; } h3 { font-size:15px; margin:0 0 10px; }
.meta { color:var(--muted); margin-bottom:10px; }
.grid { display:grid; grid-template-columns:repeat(auto-fit,minmax(340px,1fr)); gap:14px;
        margin-bottom:14px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 16px;
        margin-bottom:14px; }
.grid .card { margin-bottom:0; }
.version { font-size:28px; font-weight:650; margin-right:8px; }
.badge { display:inline-block; padding:1px 8px; border-radius:999px; font-size:12px;
         font-weight:600; background:#e2e8f0; color:#334155; vertical-align:middle; }
.badge.passed, .badge.approved, .badge.ok { background:var(--okbg); color:var(--ok); }
.badge.rejected, .badge.breach { background:var(--badbg); color:var(--bad); }
.badge.dry_run, .badge.skipped { background:var(--warnbg); color:var(--warn); }
.problems { background:var(--warnbg); color:var(--warn); border:1px solid #fcd34d;
            border-radius:8px; padding:8px 14px; margin-bottom:14px; }
.problems li { margin:2px 0; }
.empty { color:var(--muted); font-style:italic; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.03em; }
td.num { font-variant-numeric:tabular-nums; }
td.num, td.nowrap, th { white-space:nowrap; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:3px 14px; margin:10px 0; }
dt { color:var(--muted); } dd { margin:0; overflow-wrap:anywhere; }
.links a { margin-right:14px; }
.chain { display:flex; flex-wrap:wrap; align-items:stretch; gap:6px; }
.step { flex:1 1 170px; background:#f8fafc; border:1px solid var(--line); border-radius:8px;
        padding:8px 10px; min-width:170px; }
.step .t { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.03em; }
.step .v { font-weight:650; margin:2px 0; overflow-wrap:anywhere; }
.step .d { color:var(--muted); font-size:12px; overflow-wrap:anywhere; }
.arrow { align-self:center; color:var(--muted); font-size:18px; }
.chart .tick { font-size:11px; fill:var(--muted); }
code { font-size:12px; background:#f1f5f9; padding:0 4px; border-radius:4px; }
.gate-comparison th, .gate-comparison td { padding:3px 6px; font-size:12px; }
tr.comparison > td { padding-top:0; }
"""

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Esteira</title><style>{{ style|safe }}</style></head>
<body>
<header>
  <h1>Esteira</h1>
  <span class="sub">models, lineage and drift · {{ generated_at }}</span>
  <nav>{% for uc in usecases %}<a href="#uc-{{ uc.name }}">{{ uc.name }}</a>{% endfor %}</nav>
  <span class="links"><a href="{{ mlflow_ui }}" target="_blank" rel="noopener">MLflow UI</a></span>
</header>
<main>
{% if problems %}<div class="problems"><ul>{% for p in problems %}<li>{{ p }}</li>{% endfor %}</ul></div>{% endif %}
{% if not usecases %}<p class="empty">No use case is configured.</p>{% endif %}
{% for uc in usecases %}
<section class="usecase" id="uc-{{ uc.name }}">
  <h2>{{ uc.name }}</h2>
  <div class="meta">{{ uc.description }}{% if uc.owner %} · owner {{ uc.owner }}{% endif %}
    · model <a href="{{ uc.links.model }}" target="_blank" rel="noopener"><code>{{ uc.model_name }}</code></a>
    · DAGs: {% for stage, url in uc.links.dags.items() %}<a href="{{ url }}" target="_top">{{ stage }}</a>{% if not loop.last %}, {% endif %}{% endfor %}
  </div>
  {% if uc.problems %}<div class="problems"><ul>{% for p in uc.problems %}<li>{{ p }}</li>{% endfor %}</ul></div>{% endif %}

  <div class="grid">
  {% for alias in ["champion", "challenger"] %}{% set v = uc[alias] %}
    <div class="card" data-alias="{{ alias }}">
      <h3>{{ alias|capitalize }}</h3>
      {% if v %}
        <div><span class="version" data-version="{{ v.version }}">v{{ v.version }}</span>
          <span class="badge {{ v.gate.verdict }}">gate {{ v.gate.verdict or "unknown" }}</span>
          {% if v.gate.mode and v.gate.mode != "enabled" %}<span class="badge {{ v.gate.mode }}">{{ v.gate.mode }}</span>{% endif %}
          {% if v.approval %}<span class="badge {{ v.approval.decision }}">{{ v.approval.decision }}</span>{% endif %}
        </div>
        {{ comparison(v.gate.comparison, v.gate.compared_champion, "v" ~ v.version) }}
        {% if v.gate.reasons %}<p class="meta">{{ v.gate.reasons|join("; ") }}</p>{% endif %}
        <dl>
          <dt>registered</dt><dd>{{ when(v.created_at) }}</dd>
          {% if v.promotion %}<dt>promoted</dt><dd>{{ when(v.promotion.at) }} by {{ v.promotion.by }}{% if v.promotion.previous_champion not in ("", "none") %} (replaced v{{ v.promotion.previous_champion }}){% endif %}</dd>{% endif %}
          {% if v.approval %}<dt>{{ v.approval.decision }}</dt><dd>by {{ v.approval.by }}: {{ v.approval.reason }}</dd>{% endif %}
          {% if v.rollback %}<dt>rolled back</dt><dd>{{ when(v.rollback.at) }} by {{ v.rollback.by }}: {{ v.rollback.reason }}</dd>{% endif %}
          <dt>compared with</dt><dd>{% if v.gate.compared_champion not in ("", "none") %}champion v{{ v.gate.compared_champion }}{% else %}no champion (first model){% endif %}</dd>
          <dt>features</dt><dd><code>{{ v.feature_table_uri.rsplit("/", 1)[-1] }}</code> @ Delta v{{ v.feature_table_version }}{% if v.training_window %} · {{ v.training_window }}{% endif %}</dd>
        </dl>
        <div class="links">
          <a href="{{ v.links.model }}" target="_blank" rel="noopener">MLflow model</a>
          {% if v.links.run %}<a href="{{ v.links.run }}" target="_blank" rel="noopener">MLflow run</a>{% endif %}
          {% if v.links.dag_run %}<a href="{{ v.links.dag_run }}" target="_top">Airflow run</a>{% endif %}
        </div>
      {% elif not uc.mlflow_reachable %}
        <p class="empty">Unknown: MLflow is not reachable.</p>
      {% elif alias == "champion" %}
        <p class="empty">No champion yet: the first model that passes the gate becomes champion once promoted.</p>
      {% else %}
        <p class="empty">No challenger waiting for promotion.</p>
      {% endif %}
    </div>
  {% endfor %}
  </div>

  {% if uc.lineage %}
  <div class="card lineage">
    <h3>Lineage of the champion</h3>
    <div class="chain">
      {% for step in uc.lineage %}
        <div class="step" data-step="{{ step.title }}">
          <div class="t">{{ step.title }}</div>
          <div class="v">{% if step.link %}<a href="{{ step.link }}" target="_blank" rel="noopener">{{ step.value }}</a>{% else %}{{ step.value }}{% endif %}</div>
          <div class="d">{{ step.detail }}</div>
          {% if step.link2 %}<div class="d"><a href="{{ step.link2 }}" target="_top">Airflow run</a></div>{% endif %}
          {% if step.at %}<div class="d">{{ when(step.at) }}</div>{% endif %}
        </div>
        {% if not loop.last %}<div class="arrow">&#8594;</div>{% endif %}
      {% endfor %}
    </div>
  </div>
  {% endif %}

  <div class="card monitoring">
    <h3>Monitoring</h3>
    {% set m = uc.monitoring %}
    {% if m.available %}
      <div class="meta">Drift share per window (share of drifted feature columns); a window
        breaches above the threshold. {% if m.latest_report %}Latest report
        ({{ m.latest_report.window_start[:10] }} to {{ m.latest_report.window_end[:10] }}, v{{ m.latest_report.model_version }}):
        {% if m.latest_report.html %}<a href="{{ m.latest_report.html }}" target="_blank" rel="noopener">Evidently report</a> ·{% endif %}
        <a href="{{ m.latest_report.mlflow }}" target="_blank" rel="noopener">in MLflow</a>{% endif %}</div>
      {{ chart(m.series, m.threshold)|safe }}
      <table>
        <tr><th>window</th><th>model</th><th>drift share</th><th>drifted columns</th><th>quality</th><th>rows</th><th>decision</th></tr>
        {% for w in m.windows %}
        <tr>
          <td class="nowrap">{{ w.window_start[:10] }} to {{ w.window_end[:10] }}</td>
          <td>v{{ w.model_version }}</td>
          <td class="num">{{ fmt(w.drift_share, 3) }} {% if w.breach %}<span class="badge breach">breach</span>{% endif %}</td>
          <td>{{ w.drifted_columns|join(", ") or "none" }}</td>
          <td class="num">{% if w.quality_metric %}{{ w.quality_metric }} {{ fmt(w.quality_value) }}{% else %}<span class="empty">labels pending</span>{% endif %}</td>
          <td class="num">{{ w.current_rows if w.current_rows is not none else "" }}</td>
          <td>{% if w.retrain %}<span class="badge breach">retrain</span> {% endif %}{{ w.retrain_reason }}</td>
        </tr>
        {% endfor %}
      </table>
    {% else %}<p class="empty">{{ m.message }}.</p>{% endif %}
  </div>

  {% if uc.history %}
  <div class="card history">
    <h3>Registry history</h3>
    <table>
      <tr><th>when</th><th>action</th><th>version</th><th>before</th><th>by</th><th>reason</th></tr>
      {% for e in uc.history[:HISTORY_ROWS] %}
      <tr data-action="{{ e.action }}"><td class="nowrap">{{ when(e.at) }}</td><td>{{ e.action }}</td>
        <td>{% if e.model_link %}<a href="{{ e.model_link }}" target="_blank" rel="noopener">v{{ e.version }}</a>{% endif %}</td>
        <td>{% if e.previous %}v{{ e.previous }}{% endif %}</td><td>{{ e.actor }}</td><td>{{ e.reason }}</td></tr>
      {% if e.action == "promote" and e.comparison %}
      <tr class="comparison"><td></td><td colspan="5">{{ comparison(e.comparison, e.compared_champion, "v" ~ e.version) }}</td></tr>
      {% endif %}
      {% endfor %}
    </table>
  </div>
  {% endif %}
</section>
{% endfor %}
</main>
</body></html>
"""

_COMPARISON = """{% macro comparison(rows, champion, candidate) -%}
<table class="gate-comparison" style="margin-top:8px">
  <tr><th>metric (same test set)</th><th>{{ candidate }}</th>
    <th>{% if champion not in ("", "none") %}champion v{{ champion }}{% else %}no champion{% endif %}</th>
    <th>change</th><th>rule</th></tr>
  {% for r in rows %}
  <tr><td>{{ r.metric }}</td><td class="num">{{ fmt(r.candidate) }}</td><td class="num">{{ fmt(r.champion) }}</td>
    <td class="num">{{ "-" if r.change is none else "%+.4f"|format(r.change) }}</td><td>{{ r.rule }}</td></tr>
  {% endfor %}
</table>
{%- endmacro %}"""

_MESSAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Esteira</title><style>{{ style|safe }}</style></head>
<body><header><h1>Esteira</h1></header>
<main><div class="card"><h3>{{ title }}</h3><p>{{ message }}</p>
{% if link %}<p><a href="{{ link }}" target="_top">{{ link_text }}</a></p>{% endif %}</div></main>
</body></html>
"""


@cache
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    env.globals.update(fmt=_fmt, when=_when, chart=drift_chart_svg, style=_STYLE, HISTORY_ROWS=HISTORY_ROWS)
    env.globals["comparison"] = env.from_string(_COMPARISON).module.comparison
    return env


@cache
def _template(source: str) -> jinja2.Template:
    """Compiled once per process: compiling the page costs more than rendering it."""
    return _environment().from_string(source)


def render_page(
    usecases: Sequence[Mapping[str, Any]],
    generated_at: str,
    mlflow_ui: str,
    problems: Sequence[str] = (),
) -> str:
    """The page for the overviews of ``esteira.ui.overview.usecase_overview``."""
    return _template(_TEMPLATE).render(
        usecases=usecases, generated_at=_when(generated_at), mlflow_ui=mlflow_ui, problems=problems
    )


def prepare() -> None:
    """Compile the templates now (the api-server's start) rather than on a page's request."""
    _template(_TEMPLATE)
    _template(_MESSAGE)


def render_message(title: str, message: str, link: str = "", link_text: str = "") -> str:
    """A small page for when there is nothing else to show (not logged in, unknown report)."""
    return _template(_MESSAGE).render(title=title, message=message, link=link, link_text=link_text)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _when(iso: str | None) -> str:
    """'2026-03-05T10:20:30+00:00' -> '2026-03-05 10:20 UTC'."""
    if not iso:
        return ""
    text = str(iso).replace("T", " ")
    return f"{text[:16]} UTC" if len(text) >= 16 else text
