"""patterns-server: Redis patterns offered to any language over gRPC."""

from importlib.metadata import version

# From the installed distribution, whose version setuptools reads from VERSION.
__version__ = version("patterns-server")
