"""Load benchmark of the service against a constant-answer ceiling and a tutorial baseline.

``python -m bench`` (or ``make bench``) writes ``bench/RESULTS.md``; ``--smoke`` runs it briefly.
"""
