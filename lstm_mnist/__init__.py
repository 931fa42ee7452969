"""lstm-mnist: an ablation harness for a PyTorch classifier whose enhancements are flags (a task: task/), built
around an LSTM on MNIST (the built-in task, builtin/): grids, Optuna, MLflow, the report.

The packages, bottom to top (each imports only from the layers below it; tests/test_architecture.py checks it):
  errors.py   UserError, ConfigError: a mistake the user can fix
  metrics.py  what runs are scored by, which way is better
  task/       the task protocol: a model's config keys and flags, and how the harness finds a task by name
  config.py   what the harness asks of any task's config: its identity, as TOML, experiment files
  machine/    this host                        analysis/  statistics, designs, the stopping rule
  claims/     atomic claims in Optuna storages                         training/  one run of any task: batches, train
  tracking/   MLflow (the only package that uses it)
  runs/       one recorded run (`run`, `evaluate`)
  engine/     the engine every command trains through
  tuning/     the search, one home: settings, space, study files, Optuna studies, `tune`
  grids/      ablation grids: the definition, plain, tuned, until decided
  report/     the results report               gpu/       GPU measurement, MPS
  cli.py      the command line                 api.py    the same for a notebook: DataFrames, not files
  tools/      run on the harness, never imported by it: `gpu-probes`, `gpu-accept` (their commands: tools/cli.py,
              added by __main__.py), offline wheel folders (tools/wheels/: stdlib only, imports nothing of this)
  builtin/    the built-in task, LSTM-MNIST: its config, data, model (above the harness: reached by name only)
"""
__version__ = "0.1.0"
