"""One run of any task, knowing nothing of where its results go: the task's splits as batches (batches.py), the
Lightning training that returns metrics (train.py), and the throughput benchmark (bench.py). The built-in task's
data and model are in builtin/."""
