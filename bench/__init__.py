"""Benchmarks: run by hand or by CI in --quick mode; they print figures, never fail on one."""
