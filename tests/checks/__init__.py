"""Judges' unit tests: recorded responses in, per-probe verdicts out, no server.

One module per control family, named like the check room it tests (``authn.py`` ->
``test_authn.py``). The detection matrix proves the checks end to end; these pin each
judge's decision on the answers other stacks give, so a false positive is fixed by adding
a recorded case here.
"""
