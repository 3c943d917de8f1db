"""Applications built on the library: the ``ebmcmc`` command line, its demo, the
ready-made small training set-ups that the demo, the examples and the studies share, and the
CIFAR-10 training harness of the example scripts (:mod:`ebmcmc.app.cifar`).

Nothing in the library layers imports this package.

Example:
    >>> from ebmcmc.app.setups import toy_setup
    >>> toy_setup("cd", hidden=16).dim
    2
"""
