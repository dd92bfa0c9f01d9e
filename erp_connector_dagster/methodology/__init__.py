"""Scope 3 methodology: spend-category and material mapping, categories, and the calculation.

Call `emissions.calculate_emission_lines` with a `emissions.MethodologyContext`; the rules it
applies are data files in rules/ (see mapping.py and categories.py for their formats and the
environment variables that point at user files).
"""
