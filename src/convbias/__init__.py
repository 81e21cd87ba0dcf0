"""convbias: the projection statistics of "Hyperplane arrangements of trained ConvNets are biased"."""

__version__ = "0.1.0"
