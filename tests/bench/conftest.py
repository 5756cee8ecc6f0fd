"""The bench/ scripts' tests: bench/ on sys.path once, so they import its modules by name."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "bench"))
