"""Worked solutions to the notebooks' exercises, one module per notebook (exNN.py).

Try an exercise first; then compare with `helpers/solutions/exNN.py`. The tests run every
solution, so they keep working as the course changes.
"""
