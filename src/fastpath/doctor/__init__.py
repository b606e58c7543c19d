"""`fastpath doctor`: what this kernel offers each mechanism, and what fastpath does about
what it lacks (report.py gathers the mechanisms' own probes)."""
