#!/usr/bin/env bash
# One sitting of a grid longer than the machine it runs on is held (issue 38's seed-budget grid: ~5 h of wall time
# on 2 cores, sessions of 3 h on machines that do not outlive them). The live store sits outside the work tree
# (STORE); a sitting ends with the preemption signal (the grid writes its running cells' checkpoints and exits
# 143) and its store copied to SNAP, a folder inside the repository, whose commit is what the next machine starts
# from. The copy is plain files (not one archive), so git stores each finished run's artifacts once.
#
#   bash experiments/sitting.sh start    # unpack SNAP into STORE if STORE is empty, then run the grid in the background
#   bash experiments/sitting.sh stop     # SIGTERM the grid, wait for its checkpoints and exit, copy STORE to SNAP
#   bash experiments/sitting.sh status   # the sittings so far and the store's cells by status
#
# EXP (the grid file), STORE (the live store folder), SNAP (the snapshot folder, relative to the repository),
# WORKERS (2) may be set. Every sitting's command, commit and wall time go to STORE/sittings.log (copied with it).
set -euo pipefail
cd "$(dirname "$0")/.."
EXP=${EXP:-experiments/seed-budget-cpu.toml}
NAME=$(basename "$EXP" .toml)
STORE=${STORE:-/work/stores/$NAME}
SNAP=${SNAP:-experiments/stores/$NAME}
WORKERS=${WORKERS:-2}
LOG=$STORE/sittings.log
PID=$STORE/sitting.pid
export MLFLOW_TRACKING_URI="sqlite:///$STORE/mlflow.db"
# MNIST: the Makefile finds ../shared/mnist beside a development checkout; elsewhere set LSTM_MNIST_DATA.

running() { [ -f "$PID" ] && kill -0 "$(cat "$PID")" 2>/dev/null; }

case "${1:-}" in
start)
    if running; then echo "error: a sitting is running (pid $(cat "$PID")): stop it first" >&2; exit 1; fi
    mkdir -p "$STORE"
    if [ ! -f "$STORE/mlflow.db" ] && [ -f "$SNAP/mlflow.db" ]; then
        cp -a "$SNAP/." "$STORE/"
        echo "$(date -u +%FT%TZ) unpacked $SNAP (commit $(git rev-parse --short HEAD)) into $STORE" >>"$LOG"
    fi
    make install >/dev/null
    cmd="make ablation EXP=$EXP WORKERS=$WORKERS"
    # setsid: the sitting is its own process group, so `stop` signals the grid and not this shell's caller.
    setsid bash -c '
        t0=$(date +%s)
        echo "$(date -u +%FT%TZ) start: $1 (commit $(git rev-parse --short HEAD))" >>"$2"
        set +e; $1 >>"$3" 2>&1; rc=$?
        echo "$(date -u +%FT%TZ) end: exit $rc after $(( $(date +%s) - t0 )) s" >>"$2"' \
        sitting "$cmd" "$LOG" "$STORE/sitting.out" </dev/null >/dev/null 2>&1 &
    echo $! >"$PID"
    echo "sitting started (pid $!): $cmd; its log: $LOG"
    ;;
stop)
    if running; then
        pgid=$(ps -o pgid= "$(cat "$PID")" | tr -d ' ')
        # The grid's driver handles SIGTERM (checkpoints kept, runs KILLED, exit 143); its workers die with it.
        pkill -TERM -g "$pgid" -f "lstm_mnist ablate" || true
        while running; do sleep 2; done
    fi
    rm -rf "$SNAP" && mkdir -p "$SNAP" && cp -a "$STORE/." "$SNAP/" && rm -f "$SNAP"/*.lock "$SNAP/sitting.pid"
    echo "copied $STORE to $SNAP ($(du -sh "$SNAP" | cut -f1)): commit it to carry the grid to the next machine"
    ;;
status)
    cat "$LOG" 2>/dev/null || echo "no sitting yet in $STORE"
    .venv/bin/python - <<'EOF'
import collections, os
from mlflow.tracking import MlflowClient
c = MlflowClient()
exps = [e for e in c.search_experiments() if e.name != "Default"]
for e in exps:
    runs = c.search_runs([e.experiment_id], max_results=5000)
    print(e.name, dict(collections.Counter(r.info.status for r in runs)))
EOF
    ;;
*)
    echo "usage: bash experiments/sitting.sh start|stop|status (EXP=, STORE=, SNAP=, WORKERS= may be set)" >&2
    exit 2
    ;;
esac
