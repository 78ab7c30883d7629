"""The root of every error heterarch raises, shared by all of its packages.

``actors``, ``transports``, ``sandbox`` and ``runtime`` each keep their own ``errors.py``; every
class there derives from ``HeterarchError`` (re-exported as ``actors.HeterarchError``), so one
``except HeterarchError`` catches anything a user can act on.
"""

from ._errors import HeterarchError as HeterarchError

__all__ = ("HeterarchError",)
