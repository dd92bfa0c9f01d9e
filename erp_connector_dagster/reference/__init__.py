"""Reference data: EEIO factor sets, price indexes, exchange rates, activity factors, units.

Each data file in data/ ships with a provenance note (EPA_, BEA_, NAICS_ and
MATERIAL_FACTORS_PROVENANCE.md) saying where it comes from and what was checked.
"""
