"""Data-parallel training on torch.distributed: tests on 2 CPU ranks (gloo)."""
