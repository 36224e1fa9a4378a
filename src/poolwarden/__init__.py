"""poolwarden: a Python application server with the process model of IIS 7.

One front end routes requests to application pools; an activation service runs
each pool's worker processes; every worker death is explained in an event.
"""

__version__ = "0.1.0"
