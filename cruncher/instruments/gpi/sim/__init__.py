"""Simulated GPI data with known truth: nights of raw frames, calibrations and datacubes.

No real GPI raw data can be had where cruncher is developed and tested, so every test, benchmark
and the demo run on data made here. The simulator models the instrument closely enough that the
DRP has real work to do (find the flexure, the star, the bad pixels) and a known answer to meet.
"""
