"""Pure domain rules: travel document codes and notices, MRZ parsing, repatriation cases.

Everything in this package is sans-I/O: values in, values out, time passed in as an
argument. No network, no database, no clock.
"""
