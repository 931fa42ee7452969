"""lstm-mnist: an ablation harness for an LSTM-on-MNIST classifier (flags, grid, Optuna, MLflow, report)."""
__version__ = "0.1.0"
