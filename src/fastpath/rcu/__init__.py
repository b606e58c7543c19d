"""RCU for fastpath (placeholder docstring; replaced below)."""
