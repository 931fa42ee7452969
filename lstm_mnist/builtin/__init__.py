"""The built-in task, LSTM-MNIST: its config and flags (config.py), its data (data.py) and its model (model.py).
A task above the harness: it imports the harness's protocol, and the harness reaches it only by name."""
