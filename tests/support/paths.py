"""Where the repository and these helpers are, whatever folder a test lives in."""

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
ROOT = SUPPORT.parent.parent
