"""The parts of bench.throughput (kept out of bench/*.py, which the test suite runs one by one).

batch             the messages both engines deliver
sink              smtp-sink and the clock on its message counter
postfix           private Postfix instances: the reference sender, the STARTTLS sink
delivery_runner   delivery's worker in a process of its own (run by engines)
engines           one timed run of each engine
procs             CPU seconds of process trees and threads, running commands
profile_report    where delivery's time goes, from a cProfile of one run
"""
