"""Retake the screenshots of docs/ui.md: MLflow's UI (`python -m lstm_mnist ui`) on this project's store, in
headless Chromium, on a grid that has run and been reported (`make ablation EXP=experiments/ablation-quick.toml`,
then `make report`).

    make screenshots [GRID=ablation-quick]      # or: .venv/bin/python docs/ui/screenshots.py --grid ablation-quick

Chromium: Debian's `chromium` (apt-get install chromium), or the binary CHROMIUM names. Each picture is one
URL of the UI, so what it shows is what a reader gets by following the same link.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        sys.exit("error: no Chromium found: apt-get install chromium, or set CHROMIUM to its binary")
    return found


def grid_runs(grid: str):
    """(experiment id, the grid's latest parent run, its child runs) from the store the CLI uses."""
    from lstm_mnist.tracking import query, store

    c = store.client()
    parent = query.latest_parent(roles=("grid",), grid=grid, c=c)
    if parent is None:
        sys.exit(f"error: no grid {grid!r} in this store: run it first (make ablation EXP=experiments/{grid}.toml)")
    experiment = c.get_experiment(parent.experiment_id).name
    children = [r for r in query.search(experiment, c=c) if r.parent_id == parent.run_id]
    return parent.experiment_id, parent, children


def shoot(browser: str, url: str, out: Path, size: str = "1600,1000", wait_ms: int = 20000) -> None:
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size}", f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)
    print(f"{out.relative_to(HERE.parent.parent)}  <- {url}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="ablation-quick")
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    browser = chromium()
    exp_id, parent, children = grid_runs(args.grid)
    by_arm = {(r.tags.get("arm"), r.tags.get("seed")): r.run_id for r in children}
    pick = [by_arm[k] for k in (("baseline", "0"), ("baseline+adamw", "0"), ("full", "0"), ("full-adamw", "0"))
            if k in by_arm] or [r.run_id for r in children[:4]]
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "lstm_mnist", "ui", "--port", str(port)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or ui.poll() is not None:
                    sys.exit("error: the UI did not start: " + (ui.stdout.read() if ui.poll() is not None else ""))
                time.sleep(0.5)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        flt = urllib.parse.quote(f"tags.grid_name = '{args.grid}'")  # the parent, its cells folded under it
        shoot(browser, f"{base}/#/experiments/{exp_id}/runs?searchFilter={flt}&workflowType=machine_learning",
              out / "runs-table.png", size="1800,1000")
        runs = urllib.parse.quote(json.dumps(pick))
        shoot(browser, f"{base}/#/compare-runs?runs={runs}&experiments={urllib.parse.quote(json.dumps([exp_id]))}"
              "&workflowType=machine_learning",
              out / "compare.png", size="1600,1400")
        shoot(browser, f"{base}/#/experiments/{exp_id}/runs/{parent.run_id}/artifacts/report/report.md"
              "?workflowType=machine_learning",
              out / "parent-report.png", size="1600,1200")
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
