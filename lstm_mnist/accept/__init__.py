"""`make gpu-accept`: every GPU-specific path of the harness checked in one prepared call, and the GPU answer.

  steps.py   each step: the harness run as a user runs it (the CLI in a process of its own, logged), then
             what it promises checked in the store, the study or the files it wrote
  run.py     the command: which steps, in which order, resumed from OUT/steps.json, the one-screen summary
"""
