"""Benchmarks behind `python src/bench.py mode=...`: vitlab's training step against a bare PyTorch
loop (fit.py) and on the real loaders of every data path (path.py)."""
