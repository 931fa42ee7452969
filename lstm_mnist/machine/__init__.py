"""This host: what the machine is, its processes (host.py), the CPU cores and GPUs each worker gets
(cores.py), and the host-wide core lease that lets several invocations divide the cores (lease.py).
Imports only `config`, torch and the standard library."""
