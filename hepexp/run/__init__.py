"""The three tasks behind train.py, evaluate.py and convert.py.

Importing this package registers hepexp's OmegaConf resolvers, which the configs use.
"""

from hepexp.run.resolvers import register_resolvers

register_resolvers()
