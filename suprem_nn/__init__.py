"""suprem_nn: self-configuring 3D CT segmentation that starts every model from the SuPreM backbones.

Stages, one package each, in the order a CT flows through them:
``io`` -> ``datasets`` -> ``planning`` -> ``preprocessing`` -> ``training`` (with ``networks``)
-> ``inference`` -> ``evaluation``. ``cli`` only wraps library functions.
"""
__version__ = "0.1.0"
