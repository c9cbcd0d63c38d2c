"""Figures the fault-matrix tests measured, printed at the end of the pytest run.

A test of a fault-matrix row calls ``record_figure(row, text)`` with the row's name (as in the
README's fault-matrix table) and what it measured, e.g.
``record_figure("TCP blackhole mid-statement", "error after 0.52 s, deadline 0.5 s")``.
conftest.py prints every recorded figure in a "fault matrix figures" section of the terminal
summary, so the test command's output carries them.
"""

FIGURES = []


def record_figure(row, text):
    FIGURES.append((row, text))
