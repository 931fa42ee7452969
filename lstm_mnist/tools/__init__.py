"""The tools: what is run on the harness, not part of it. They import the harness; the harness never imports
them (tests/test_architecture.py checks both).

  cli.py      their commands on the harness's command line: `gpu-probes`, `gpu-accept` (__main__.py adds them)
  probes.py   `gpu-probes`: one optimizer step four ways, prototypes that decide what the training path builds
  fused.py    M models of one shape as one (per-time-step batched matmuls): a probe, not the training path
  accept/     `gpu-accept`: every GPU-specific path of the harness checked, and the GPU answer
  wheels/     offline wheel folders (`make wheelhouse`, `make install WHEELS=dir`): standard library only, it
              imports nothing of lstm_mnist, because it runs before the project is installed

Nothing is imported here: `python -m lstm_mnist.tools.wheels` imports this package first, on a bare Python.
"""
