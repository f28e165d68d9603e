"""Long-running harnesses against a real daemon: fault injection (``churn``) and hostile requests (``fuzz``).

Both run from the command line (``python -m tests.stress.churn``, ``python -m tests.stress.fuzz``)
and, in short versions, as integration tests. ``env`` starts a throw-away daemon with a registry,
a busybox image and a network of its own; ``probes`` finds everything a daemon's pods and
containers may leave on the host.
"""
