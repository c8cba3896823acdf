"""The paper's per-environment settings (``configs/paper/envs.py:ENV``)."""
