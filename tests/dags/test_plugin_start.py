"""The plugin costs the other Airflow processes nothing, and the api-server's start prepares
the Esteira page, so that no request pays for its imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def _python(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(PLUGINS)!r})\n{code}"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_plugin_builds_no_app():
    found = _python(
        "import json\n"
        "import esteira_plugin\n"
        "print(json.dumps(sorted(m for m in ('fastapi', 'mlflow', 'esteira.ui.overview') if m in sys.modules)))\n"
    )
    assert found == []


def test_the_api_servers_start_imports_what_the_page_reads_with():
    """The api-server enters the lifespan of every mounted FastAPI app before it serves."""
    found = _python(
        "import json\n"
        "from starlette.testclient import TestClient\n"
        "import esteira_plugin\n"
        "(entry,) = esteira_plugin.EsteiraPlugin().fastapi_apps\n"
        "assert esteira_plugin.EsteiraPlugin().fastapi_apps[0]['app'] is entry['app']\n"
        "with TestClient(entry['app']):\n"
        "    pass\n"
        "print(json.dumps({'prefix': entry['url_prefix'],\n"
        "    'missing': [m for m in esteira_plugin.PAGE_MODULES if m not in sys.modules],\n"
        "    'heavy': sorted(m for m in ('sklearn', 'evidently') if m in sys.modules)}))\n"
    )
    assert found == {"prefix": "/esteira", "missing": [], "heavy": []}
