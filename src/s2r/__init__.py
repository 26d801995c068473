"""s2r: teach language models to self-verify and self-correct (S²R), and measure how well they do."""

__version__ = "0.1.0"
