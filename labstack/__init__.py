"""labstack: matched CPU and CUDA deep-learning images, built reproducibly and checked on the host."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
__version__ = "0.1.0"
