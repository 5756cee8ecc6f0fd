"""The training loop for the networks in ``mxcnn.symbols``: command-line options, the job
checks, the engines (Module, Gluon), epochs, EMA/lookahead, optimizer state and logs.

Kept free of imports so that ``mxcnn.common.runtime.configure()`` can run before MXNet loads.
"""
