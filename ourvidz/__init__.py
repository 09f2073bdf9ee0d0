"""ourvidz: prompt to images and videos on your own GPU (SDXL, Wan 2.1, Qwen 2.5 enhancement)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ourvidz")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
