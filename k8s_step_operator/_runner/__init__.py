"""Following one step's Job from submission to its end: the watcher, the logs and the diagnosis.

The diagnosis is pure. The runner and the watcher receive their API access and their clock as
parameters, so that unit tests drive them with an in-memory fake and a fake clock.
"""
