"""Run the ``virnucpro`` command with faults injected, as a test's subprocess:

    python tests/fault_launcher.py '{"die_owner": "w1", "die_after": 1}' predict ARGS...

The JSON becomes a ``virnucpro.run.faults.FaultPlan`` handed to ``virnucpro.cli.run`` (the command's
own entry point, as ``python -m virnucpro`` calls it); production code reads no test variable from
the environment. Worker processes started with spawn import this file as ``__mp_main__``: nothing
runs then.
"""

import sys

if __name__ == "__main__":
    from virnucpro.cli import run
    from virnucpro.run.faults import FaultPlan
    run(sys.argv[2:], faults=FaultPlan.from_json(sys.argv[1]))
