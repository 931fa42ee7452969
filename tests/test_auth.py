"""The tracking server behind MLflow's basic-auth app, set up as docs/scaling.md says (the passwords in the
environment, never on a command line): a user the admin creates runs a grid and its report with their
credentials; none, or a wrong password, is one line with nothing written; the right password then resumes."""
import base64
import json
import secrets
import urllib.request

import pytest

from .chaos_tools import Server
from .conftest import TINY_BUDGET, run_cli

pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs the ui extra (mlflow[auth])")

GRID = f"""experiment = "auth-test"
designs = ["add_one_in"]
flags = ["adamw"]
seeds = [0, 1]
[budget]
max_epochs = 1
{TINY_BUDGET}"""


def _call(server: Server, endpoint: str, body: dict | None, user: str, password: str) -> dict:
    """The server's REST API as `user` (GET without a body, else POST)."""
    url = f"{server.uri}/api/2.0/mlflow/{endpoint}"
    req = urllib.request.Request(url, json.dumps(body).encode() if body is not None else None,
                                 {"Content-Type": "application/json",
                                  "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def _runs(server: Server, admin_password: str) -> list:
    found = _call(server, "experiments/search", {"max_results": 100}, "admin", admin_password).get("experiments", [])
    ids = [e["experiment_id"] for e in found if e["name"] == "auth-test"]
    return _call(server, "runs/search", {"experiment_ids": ids}, "admin", admin_password).get("runs", []) if ids else []


@pytest.mark.scenario
@pytest.mark.subprocess
def test_a_grid_and_its_report_through_basic_auth_and_wrong_credentials_in_one_line(project, tmp_path):
    admin_password, password = secrets.token_hex(8), secrets.token_hex(8)
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = EDIT\ndatabase_uri = sqlite:///{tmp_path}/auth.db\n"
                   "admin_username = admin\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    server = Server(tmp_path, app_name="basic-auth",
                    env={"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
                         "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
    server.start()
    try:
        _call(server, "users/create", {"username": "student", "password": password}, "admin", admin_password)
        path = project / "experiments" / "auth-grid.toml"
        path.write_text(GRID)
        base = {"MLFLOW_TRACKING_URI": server.uri}
        said = {}
        for case, creds in (("no credentials", {}),
                            ("a wrong password", {"MLFLOW_TRACKING_USERNAME": "student",
                                                  "MLFLOW_TRACKING_PASSWORD": "not-" + password})):
            proc = run_cli("ablate", str(path), cwd=project, env={**base, **creds}, timeout=120)
            lines = proc.stderr.strip().splitlines()
            said[case] = lines[-1] if lines else ""
            assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
            assert "refused the user and password (401)" in lines[0] and "MLFLOW_TRACKING_PASSWORD" in lines[0]
            assert _runs(server, admin_password) == []  # nothing half-written
        right = {**base, "MLFLOW_TRACKING_USERNAME": "student", "MLFLOW_TRACKING_PASSWORD": password}
        proc = run_cli("ablate", str(path), cwd=project, env=right, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
        runs = _runs(server, admin_password)
        cells = [r for r in runs if r["info"]["run_name"] != "auth-grid"]
        assert len(cells) == 4 and all(r["info"]["status"] == "FINISHED" for r in runs), [r["info"] for r in runs]
        report = run_cli("report", "--grid", "auth-grid", cwd=project, env=right, timeout=180)
        assert report.returncode == 0, report.stderr[-3000:]
        wrong = run_cli("report", "--grid", "auth-grid", cwd=project,
                        env={**right, "MLFLOW_TRACKING_PASSWORD": "x"}, timeout=120)
        assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr[-2000:]
        print("basic-auth:", json.dumps({**said, "report, a wrong password": wrong.stderr.strip(),
                                         "cells finished with the right one": len(cells)}))
    finally:
        server.kill()
