"""Laying numbers out for people: one table formatter (tables.py), every figure (figures.py), the
barrier text report, the sweep report and the star report. Nothing here computes a result."""
