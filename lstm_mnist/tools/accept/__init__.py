"""`make gpu-accept`: every GPU-specific path of the harness checked in one prepared call, and the GPU answer.

  harness.py what the steps stand on: the CLI run as a user runs it (a process of its own, logged, within
             the call's budget), the grid and study files it runs, what the store says about a grid
  steps.py   each step: a command, then what it promises checked in the store, the study or its files
  run.py     the command: which steps, in which order, resumed from OUT/steps.json, the one-screen summary
"""
