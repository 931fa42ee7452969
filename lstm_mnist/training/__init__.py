"""One run, knowing nothing of where its results go: MNIST as device tensors with batched augmentation
(data.py), the model built from the config (model.py), the Lightning training that returns metrics
(train.py), and the throughput benchmark (bench.py). Imports `config` and `machine` only."""
