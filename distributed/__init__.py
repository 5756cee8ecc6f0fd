"""Running one training command as a parameter-server job: scheduler, servers and workers on
this host or over ssh (``launch``), watched by one supervisor (``supervisor``).

Nothing here imports MXNet: the launcher only starts and supervises processes.
"""
