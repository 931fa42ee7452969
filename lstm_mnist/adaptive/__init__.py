"""Adaptive replication: `ablate FILE --until-decided` adds whole-design seeds in blocks while some effect is
undecided, with looks fixed in advance and α spent over them (run.py; the rule: analysis/sequential.py; the
looks' numbers: report/looks.py, the same code the report reads)."""
