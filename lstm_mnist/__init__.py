"""lstm-mnist: an ablation harness for an LSTM-on-MNIST classifier (flags, grids, Optuna, MLflow, report).

The packages, bottom to top (each imports only from those below it):
  config.py   the one frozen config, its identity and UserError        space.py   search spaces, checked (pure)
  wheels/     a wheel folder for machines without internet (stdlib only)
  machine/    this host: processes, cores, supported releases
  analysis/   pure statistics, designs, tables, figures                training/  one run: data, model, train
  tracking/   MLflow (the only package importing it)                   claims/    atomic claims in Optuna storages
  runs/       one recorded run                                         grids/     ablation grids
  tuning/     Optuna studies        report/  the results report        gpu/       GPU measurement, MPS
  tuned/      tuned ablations: every arm searched with an equal budget before it is compared
  adaptive/   `ablate --until-decided`: seeds added in blocks until every effect is decided
  accept/     `gpu-accept`: every GPU-specific path checked, and the GPU answer
  cli.py      the command line
"""
__version__ = "0.1.0"
