"""The activation service's policy: pure functions of (state, event, now).

The driver (`poolwarden.master.pool`) performs what they decide; these
modules read no clock, spawn nothing, signal nothing and log nothing.
"""
