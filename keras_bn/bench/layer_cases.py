"""The BN settings every layer benchmark times, on TensorFlow and on JAX.

TensorFlow-free, so the JAX benchmarks run where TensorFlow is not installed.
"""

MOMENTUM = 0.99
EPSILON = 1e-3
