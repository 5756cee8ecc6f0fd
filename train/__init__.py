"""Training, evaluation and launching for the networks in ``symbols``.

Kept free of imports so that ``train.runtime.configure()`` can run before MXNet loads.
"""
